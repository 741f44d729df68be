import { BTN_EXTRA, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, BTN_SIDE } from './input-event';

/**
 * Linux key codes (linux/input-event-codes.h), the short names used in hotkey files ("Ctrl+1"),
 * and QEMU's QKeyCode names (qapi/ui.json) for `input-send-event`. Covers the standard 104/105-key
 * PC keyboard, the JIS/Korean extras, and common media keys. A test checks every qcode here
 * against a real QEMU.
 */
const KEYS: Array<[code: number, name: string, qcode: string]> = [
  [1, 'Esc', 'esc'],
  [2, '1', '1'],
  [3, '2', '2'],
  [4, '3', '3'],
  [5, '4', '4'],
  [6, '5', '5'],
  [7, '6', '6'],
  [8, '7', '7'],
  [9, '8', '8'],
  [10, '9', '9'],
  [11, '0', '0'],
  [12, 'Minus', 'minus'],
  [13, 'Equal', 'equal'],
  [14, 'Backspace', 'backspace'],
  [15, 'Tab', 'tab'],
  [16, 'Q', 'q'],
  [17, 'W', 'w'],
  [18, 'E', 'e'],
  [19, 'R', 'r'],
  [20, 'T', 't'],
  [21, 'Y', 'y'],
  [22, 'U', 'u'],
  [23, 'I', 'i'],
  [24, 'O', 'o'],
  [25, 'P', 'p'],
  [26, 'LeftBrace', 'bracket_left'],
  [27, 'RightBrace', 'bracket_right'],
  [28, 'Enter', 'ret'],
  [29, 'LeftCtrl', 'ctrl'],
  [30, 'A', 'a'],
  [31, 'S', 's'],
  [32, 'D', 'd'],
  [33, 'F', 'f'],
  [34, 'G', 'g'],
  [35, 'H', 'h'],
  [36, 'J', 'j'],
  [37, 'K', 'k'],
  [38, 'L', 'l'],
  [39, 'Semicolon', 'semicolon'],
  [40, 'Apostrophe', 'apostrophe'],
  [41, 'Grave', 'grave_accent'],
  [42, 'LeftShift', 'shift'],
  [43, 'Backslash', 'backslash'],
  [44, 'Z', 'z'],
  [45, 'X', 'x'],
  [46, 'C', 'c'],
  [47, 'V', 'v'],
  [48, 'B', 'b'],
  [49, 'N', 'n'],
  [50, 'M', 'm'],
  [51, 'Comma', 'comma'],
  [52, 'Dot', 'dot'],
  [53, 'Slash', 'slash'],
  [54, 'RightShift', 'shift_r'],
  [55, 'KPAsterisk', 'kp_multiply'],
  [56, 'LeftAlt', 'alt'],
  [57, 'Space', 'spc'],
  [58, 'CapsLock', 'caps_lock'],
  [59, 'F1', 'f1'],
  [60, 'F2', 'f2'],
  [61, 'F3', 'f3'],
  [62, 'F4', 'f4'],
  [63, 'F5', 'f5'],
  [64, 'F6', 'f6'],
  [65, 'F7', 'f7'],
  [66, 'F8', 'f8'],
  [67, 'F9', 'f9'],
  [68, 'F10', 'f10'],
  [69, 'NumLock', 'num_lock'],
  [70, 'ScrollLock', 'scroll_lock'],
  [71, 'KP7', 'kp_7'],
  [72, 'KP8', 'kp_8'],
  [73, 'KP9', 'kp_9'],
  [74, 'KPMinus', 'kp_subtract'],
  [75, 'KP4', 'kp_4'],
  [76, 'KP5', 'kp_5'],
  [77, 'KP6', 'kp_6'],
  [78, 'KPPlus', 'kp_add'],
  [79, 'KP1', 'kp_1'],
  [80, 'KP2', 'kp_2'],
  [81, 'KP3', 'kp_3'],
  [82, 'KP0', 'kp_0'],
  [83, 'KPDot', 'kp_decimal'],
  [86, '102nd', 'less'],
  [87, 'F11', 'f11'],
  [88, 'F12', 'f12'],
  [89, 'RO', 'ro'],
  [91, 'Hiragana', 'hiragana'],
  [92, 'Henkan', 'henkan'],
  [93, 'KatakanaHiragana', 'katakanahiragana'],
  [94, 'Muhenkan', 'muhenkan'],
  [96, 'KPEnter', 'kp_enter'],
  [97, 'RightCtrl', 'ctrl_r'],
  [98, 'KPSlash', 'kp_divide'],
  [99, 'SysRq', 'sysrq'],
  [100, 'RightAlt', 'alt_r'],
  [101, 'LineFeed', 'lf'],
  [102, 'Home', 'home'],
  [103, 'Up', 'up'],
  [104, 'PageUp', 'pgup'],
  [105, 'Left', 'left'],
  [106, 'Right', 'right'],
  [107, 'End', 'end'],
  [108, 'Down', 'down'],
  [109, 'PageDown', 'pgdn'],
  [110, 'Insert', 'insert'],
  [111, 'Delete', 'delete'],
  [113, 'Mute', 'audiomute'],
  [114, 'VolumeDown', 'volumedown'],
  [115, 'VolumeUp', 'volumeup'],
  [116, 'Power', 'power'],
  [117, 'KPEqual', 'kp_equals'],
  [119, 'Pause', 'pause'],
  [121, 'KPComma', 'kp_comma'],
  [122, 'Hangeul', 'lang1'],
  [123, 'Hanja', 'lang2'],
  [124, 'Yen', 'yen'],
  [125, 'LeftMeta', 'meta_l'],
  [126, 'RightMeta', 'meta_r'],
  [127, 'Compose', 'compose'],
  [128, 'Stop', 'stop'],
  [129, 'Again', 'again'],
  [130, 'Props', 'props'],
  [131, 'Undo', 'undo'],
  [132, 'Front', 'front'],
  [133, 'Copy', 'copy'],
  [134, 'Open', 'open'],
  [135, 'Paste', 'paste'],
  [136, 'Find', 'find'],
  [137, 'Cut', 'cut'],
  [138, 'Help', 'help'],
  [139, 'Menu', 'menu'],
  [140, 'Calc', 'calculator'],
  [142, 'Sleep', 'sleep'],
  [143, 'WakeUp', 'wake'],
  [155, 'Mail', 'mail'],
  [156, 'Bookmarks', 'ac_bookmarks'],
  [157, 'Computer', 'computer'],
  [158, 'Back', 'ac_back'],
  [159, 'Forward', 'ac_forward'],
  [163, 'NextSong', 'audionext'],
  [164, 'PlayPause', 'audioplay'],
  [165, 'PreviousSong', 'audioprev'],
  [166, 'StopCD', 'audiostop'],
  [172, 'HomePage', 'ac_home'],
  [173, 'Refresh', 'ac_refresh'],
  [226, 'Media', 'mediaselect'],
];

/** QEMU InputButton names for mouse buttons. */
export const BUTTON_QNAMES: ReadonlyMap<number, string> = new Map([
  [BTN_LEFT, 'left'],
  [BTN_RIGHT, 'right'],
  [BTN_MIDDLE, 'middle'],
  [BTN_SIDE, 'side'],
  [BTN_EXTRA, 'extra'],
]);

export const KEY_QCODES: ReadonlyMap<number, string> = new Map(KEYS.map(([c, , q]) => [c, q]));
const BY_NAME = new Map<string, number>(KEYS.map(([c, n]) => [n.toLowerCase(), c]));
const NAME_OF = new Map<number, string>(KEYS.map(([c, n]) => [c, n]));

/** The highest EV_KEY code the kernel delivers (KEY_MAX); it never delivers 0 (KEY_RESERVED). */
export const KEY_MAX = 0x2ff;
export const KEY_LEFTCTRL = 29;
export const KEY_RIGHTCTRL = 97;
export const KEY_LEFTSHIFT = 42;
export const KEY_RIGHTSHIFT = 54;
export const KEY_LEFTALT = 56;
export const KEY_RIGHTALT = 100;
export const KEY_LEFTMETA = 125;
export const KEY_RIGHTMETA = 126;
export const KEY_CAPSLOCK = 58;
export const KEY_NUMLOCK = 69;
export const KEY_SCROLLLOCK = 70;
export const KEY_BACKSPACE = 14;

export function keyCodeByName(name: string): number | undefined {
  return BY_NAME.get(name.toLowerCase());
}
export function keyName(code: number): string {
  return NAME_OF.get(code) ?? `Key${code}`;
}
/** Every key code of the table (a keyboard uinput device declares these). */
export const ALL_KEY_CODES: readonly number[] = KEYS.map(([c]) => c);
