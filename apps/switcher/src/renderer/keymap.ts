/**
 * Browser KeyboardEvent.code (physical key, layout independent) → Linux input-event-codes KEY_*.
 * The demo forwards these to Input1.InjectEvents so input takes the same path as on hardware.
 */
export const EV_SYN = 0;
export const EV_KEY = 1;
export const EV_REL = 2;
export const SYN_REPORT = 0;
export const REL_X = 0;
export const REL_Y = 1;
export const REL_WHEEL = 8;
export const BTN_LEFT = 0x110;
export const BTN_RIGHT = 0x111;
export const BTN_MIDDLE = 0x112;

const letters = 'QWERTYUIOP'.split('').map((c, i) => [`Key${c}`, 16 + i] as const);
const row2 = 'ASDFGHJKL'.split('').map((c, i) => [`Key${c}`, 30 + i] as const);
const row3 = 'ZXCVBNM'.split('').map((c, i) => [`Key${c}`, 44 + i] as const);
const digits = '1234567890'.split('').map((c, i) => [`Digit${c}`, 2 + i] as const);
const fkeys = Array.from({ length: 10 }, (_, i) => [`F${i + 1}`, 59 + i] as const);

export const KEY_CODES: Readonly<Record<string, number>> = Object.freeze({
  Escape: 1,
  ...Object.fromEntries(digits),
  Minus: 12,
  Equal: 13,
  Backspace: 14,
  Tab: 15,
  ...Object.fromEntries(letters),
  BracketLeft: 26,
  BracketRight: 27,
  Enter: 28,
  ControlLeft: 29,
  ...Object.fromEntries(row2),
  Semicolon: 39,
  Quote: 40,
  Backquote: 41,
  ShiftLeft: 42,
  Backslash: 43,
  ...Object.fromEntries(row3),
  Comma: 51,
  Period: 52,
  Slash: 53,
  ShiftRight: 54,
  NumpadMultiply: 55,
  AltLeft: 56,
  Space: 57,
  CapsLock: 58,
  ...Object.fromEntries(fkeys),
  NumLock: 69,
  ScrollLock: 70,
  Numpad7: 71,
  Numpad8: 72,
  Numpad9: 73,
  NumpadSubtract: 74,
  Numpad4: 75,
  Numpad5: 76,
  Numpad6: 77,
  NumpadAdd: 78,
  Numpad1: 79,
  Numpad2: 80,
  Numpad3: 81,
  Numpad0: 82,
  NumpadDecimal: 83,
  IntlBackslash: 86,
  F11: 87,
  F12: 88,
  NumpadEnter: 96,
  ControlRight: 97,
  NumpadDivide: 98,
  PrintScreen: 99,
  AltRight: 100,
  Home: 102,
  ArrowUp: 103,
  PageUp: 104,
  ArrowLeft: 105,
  ArrowRight: 106,
  End: 107,
  ArrowDown: 108,
  PageDown: 109,
  Insert: 110,
  Delete: 111,
  Pause: 119,
  MetaLeft: 125,
  MetaRight: 126,
  ContextMenu: 127,
});

/** The evdev frame for one key transition (value 1 = down, 0 = up, 2 = autorepeat), or null. */
export function keyFrame(code: string, value: 0 | 1 | 2): Array<[number, number, number]> | null {
  const key = KEY_CODES[code];
  if (key === undefined) return null;
  return [
    [EV_KEY, key, value],
    [EV_SYN, SYN_REPORT, 0],
  ];
}

export const mouseButton = (button: number): number | null =>
  button === 0 ? BTN_LEFT : button === 1 ? BTN_MIDDLE : button === 2 ? BTN_RIGHT : null;
