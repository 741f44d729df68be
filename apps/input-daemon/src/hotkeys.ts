import { readFileSync } from 'node:fs';
import {
  KEY_LEFTALT,
  KEY_LEFTCTRL,
  KEY_LEFTMETA,
  KEY_LEFTSHIFT,
  KEY_RIGHTALT,
  KEY_RIGHTCTRL,
  KEY_RIGHTMETA,
  KEY_RIGHTSHIFT,
  keyCodeByName,
  keyName,
} from './keycodes';

/**
 * Hotkeys: exact chords of modifiers + one key, recognised on the key's press.
 *
 * Defaults: Ctrl+1…9 → slot N, Ctrl+0 → the switcher (slot 0), and Ctrl+Alt+Backspace → secure
 * attention (lock). Why Ctrl+Alt+Backspace and not Ctrl+Alt+Del: Ctrl+Alt+Del is Windows' own
 * secure attention sequence (logon, lock, Task Manager) and guests must keep it; Ctrl+Alt+End is
 * how RDP clients send it onward; Super+L locks Windows and GNOME guests; Ctrl+Alt+F1…F12 switch
 * Linux VTs. Ctrl+Alt+Backspace is bound by no current guest OS — its only historic meaning, the
 * X server "zap", is disabled by default since Xorg 1.6 and is destructive, so no guest should
 * get it from a stray press anyway — and it needs three keys, so nobody hits it by accident.
 */
export const DEFAULT_HOTKEYS: Readonly<Record<string, string>> = {
  'Ctrl+1': 'slot:1', 'Ctrl+2': 'slot:2', 'Ctrl+3': 'slot:3', 'Ctrl+4': 'slot:4', 'Ctrl+5': 'slot:5',
  'Ctrl+6': 'slot:6', 'Ctrl+7': 'slot:7', 'Ctrl+8': 'slot:8', 'Ctrl+9': 'slot:9', 'Ctrl+0': 'slot:0',
  'Ctrl+Alt+Backspace': 'secure-attention',
};

export type Modifier = 'Ctrl' | 'Shift' | 'Alt' | 'Super';
const MODIFIER_ORDER: Modifier[] = ['Ctrl', 'Shift', 'Alt', 'Super'];

/** Left and right variants count as the same modifier. */
export const MODIFIER_OF_KEY: ReadonlyMap<number, Modifier> = new Map<number, Modifier>([
  [KEY_LEFTCTRL, 'Ctrl'], [KEY_RIGHTCTRL, 'Ctrl'],
  [KEY_LEFTSHIFT, 'Shift'], [KEY_RIGHTSHIFT, 'Shift'],
  [KEY_LEFTALT, 'Alt'], [KEY_RIGHTALT, 'Alt'],
  [KEY_LEFTMETA, 'Super'], [KEY_RIGHTMETA, 'Super'],
]);

const MODIFIER_NAMES: Record<string, Modifier> = {
  ctrl: 'Ctrl', control: 'Ctrl', shift: 'Shift', alt: 'Alt', super: 'Super', meta: 'Super', win: 'Super', logo: 'Super',
};

export type HotkeyAction = { kind: 'slot'; slot: number } | { kind: 'secure-attention' };

export interface Chord {
  /** Canonical text, modifiers in Ctrl, Shift, Alt, Super order: 'Ctrl+Alt+Backspace'. */
  text: string;
  modifiers: ReadonlySet<Modifier>;
  key: number;
  action: HotkeyAction;
  actionText: string;
}

export class HotkeyConfigError extends Error {
  override name = 'HotkeyConfigError';
}

export function parseAction(text: string, where: string): HotkeyAction {
  const m = /^slot:([0-9])$/.exec(text);
  if (m) return { kind: 'slot', slot: Number(m[1]) };
  if (text === 'secure-attention') return { kind: 'secure-attention' };
  throw new HotkeyConfigError(`${where}: unknown action '${text}' (expected slot:0…slot:9 or secure-attention)`);
}

export function parseChord(text: string, actionText: string, where: string): Chord {
  const parts = text.split('+').map((p) => p.trim());
  if (parts.length < 2 || parts.some((p) => p === ''))
    throw new HotkeyConfigError(`${where}: chord '${text}' must be modifiers and one key, e.g. 'Ctrl+1'`);
  const keyPart = parts[parts.length - 1];
  const modifiers = new Set<Modifier>();
  for (const p of parts.slice(0, -1)) {
    const m = MODIFIER_NAMES[p.toLowerCase()];
    if (!m) throw new HotkeyConfigError(`${where}: '${p}' in '${text}' is not a modifier (Ctrl, Shift, Alt, Super)`);
    if (modifiers.has(m)) throw new HotkeyConfigError(`${where}: '${text}' names ${m} twice`);
    modifiers.add(m);
  }
  const key = keyCodeByName(keyPart);
  if (key === undefined) throw new HotkeyConfigError(`${where}: unknown key '${keyPart}' in '${text}'`);
  if (MODIFIER_OF_KEY.has(key)) throw new HotkeyConfigError(`${where}: '${text}' must end in a non-modifier key`);
  const canonical = [...MODIFIER_ORDER.filter((m) => modifiers.has(m)), keyName(key)].join('+');
  return { text: canonical, modifiers, key, action: parseAction(actionText, `${where} '${text}'`), actionText };
}

/**
 * Builds the chord list: the defaults, overridden by `overrides` (chord → action; action 'none'
 * removes a default). Two chords that are the same keys are an error.
 */
export function buildChords(overrides: Record<string, string> = {}, where = 'hotkeys'): Chord[] {
  const merged = new Map<string, string>();
  const canonicalOf = (t: string, a: string) => parseChord(t, a === 'none' ? 'slot:0' : a, where).text;
  for (const [t, a] of Object.entries(DEFAULT_HOTKEYS)) merged.set(canonicalOf(t, a), a);
  for (const [t, a] of Object.entries(overrides)) {
    if (typeof a !== 'string') throw new HotkeyConfigError(`${where}: action of '${t}' must be a string`);
    const c = canonicalOf(t, a);
    if (a === 'none') merged.delete(c);
    else merged.set(c, a);
  }
  return [...merged].map(([t, a]) => parseChord(t, a, where));
}

/**
 * Reads a hotkeys file: `{ "hotkeys": { "Ctrl+1": "slot:1", "Ctrl+Alt+End": "none", ... } }`.
 * Entries override the defaults. Errors name the file and the entry.
 */
export function loadHotkeysFile(path: string): Chord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HotkeyConfigError(`${path}: ${(e as Error).message}`);
  }
  const hk = (doc as { hotkeys?: unknown })?.hotkeys;
  if (!hk || typeof hk !== 'object' || Array.isArray(hk))
    throw new HotkeyConfigError(`${path}: expected an object { "hotkeys": { "<chord>": "<action>" } }`);
  return buildChords(hk as Record<string, string>, path);
}

export type KeyDecision =
  | { kind: 'pass' }
  | { kind: 'swallow' }
  /** A chord matched on this press. `release`: modifier keys held now, which may already have reached the target. */
  | { kind: 'match'; chord: Chord; release: number[] };

/**
 * The hotkey state machine. Fed every EV_KEY event of every keyboard (physical state merged), it
 * decides per event: pass it on, swallow it, or report a chord. A chord matches on the press of
 * its key when exactly its modifiers are held (in any order, left or right) and no other key is
 * down: Ctrl+Shift+1 is not Ctrl+1. The chord key's press, repeats and release are swallowed.
 * The modifiers' earlier presses went to the target (they could have been Ctrl+C), so the match
 * lists them for release there; the router then drops their eventual physical release, because
 * it never hands a target a release whose press it did not deliver.
 */
export class HotkeyMatcher {
  private readonly down = new Set<number>();
  private readonly swallowed = new Set<number>();
  private byKey = new Map<number, Chord[]>();

  constructor(private chords: Chord[]) {
    this.setChords(chords);
  }

  setChords(chords: Chord[]): void {
    this.chords = chords;
    this.byKey = new Map();
    for (const c of chords) this.byKey.set(c.key, [...(this.byKey.get(c.key) ?? []), c]);
  }

  list(): Chord[] {
    return this.chords;
  }

  onKey(code: number, value: number): KeyDecision {
    // Mouse and tablet buttons (BTN_* ≥ 0x100) are not keys: a held drag does not spoil a chord.
    if (code >= 0x100) return { kind: 'pass' };
    if (value === 0) {
      this.down.delete(code);
      return this.swallowed.delete(code) ? { kind: 'swallow' } : { kind: 'pass' };
    }
    if (value !== 1) return this.swallowed.has(code) ? { kind: 'swallow' } : { kind: 'pass' };
    if (this.swallowed.has(code)) return { kind: 'swallow' };
    const wasDown = this.down.has(code);
    this.down.add(code);
    if (wasDown || MODIFIER_OF_KEY.has(code)) return { kind: 'pass' };
    const candidates = this.byKey.get(code);
    if (!candidates) return { kind: 'pass' };
    const held = new Set<Modifier>();
    const heldModifierKeys: number[] = [];
    for (const k of this.down) {
      if (k === code) continue;
      const m = MODIFIER_OF_KEY.get(k);
      if (!m) return { kind: 'pass' }; // another ordinary key is down: not an exact chord
      held.add(m);
      heldModifierKeys.push(k);
    }
    const chord = candidates.find((c) => c.modifiers.size === held.size && [...held].every((m) => c.modifiers.has(m)));
    if (!chord) return { kind: 'pass' };
    this.swallowed.add(code);
    return { kind: 'match', chord, release: heldModifierKeys };
  }

  /** Keys the matcher believes are down (after a device vanished, the caller reports releases). */
  isDown(code: number): boolean {
    return this.down.has(code);
  }
}
