/**
 * Hotkeys: chord parsing, the hotkeys file, and the matcher (HotkeyMatcher below).
 *
 * THE RULE: neither the press, the repeats nor the release of ANY key of a matched chord — the
 * modifiers included — reaches any VM. A modifier that could start a configured chord is held
 * back until the next key/button/wheel event decides: the chord's key → everything of the chord
 * is swallowed; anything else → the held-back presses go out first, in order, then that event
 * (Ctrl+C, Ctrl+click, Ctrl+wheel, lone Alt/Shift taps work as typed). A switch while a modifier
 * is held back drops it. Details and why pointer motion does not count: HotkeyMatcher.
 */
import { readDefinitionFile } from '@bulkhead/common';
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
  'Ctrl+1': 'slot:1',
  'Ctrl+2': 'slot:2',
  'Ctrl+3': 'slot:3',
  'Ctrl+4': 'slot:4',
  'Ctrl+5': 'slot:5',
  'Ctrl+6': 'slot:6',
  'Ctrl+7': 'slot:7',
  'Ctrl+8': 'slot:8',
  'Ctrl+9': 'slot:9',
  'Ctrl+0': 'slot:0',
  'Ctrl+Alt+Backspace': 'secure-attention',
};

export type Modifier = 'Ctrl' | 'Shift' | 'Alt' | 'Super';
const MODIFIER_ORDER: Modifier[] = ['Ctrl', 'Shift', 'Alt', 'Super'];

/** Left and right variants count as the same modifier. */
export const MODIFIER_OF_KEY: ReadonlyMap<number, Modifier> = new Map<number, Modifier>([
  [KEY_LEFTCTRL, 'Ctrl'],
  [KEY_RIGHTCTRL, 'Ctrl'],
  [KEY_LEFTSHIFT, 'Shift'],
  [KEY_RIGHTSHIFT, 'Shift'],
  [KEY_LEFTALT, 'Alt'],
  [KEY_RIGHTALT, 'Alt'],
  [KEY_LEFTMETA, 'Super'],
  [KEY_RIGHTMETA, 'Super'],
]);

const MODIFIER_NAMES: Record<string, Modifier> = {
  ctrl: 'Ctrl',
  control: 'Ctrl',
  shift: 'Shift',
  alt: 'Alt',
  super: 'Super',
  meta: 'Super',
  win: 'Super',
  logo: 'Super',
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
  throw new HotkeyConfigError(
    `${where}: unknown action '${text}' (expected slot:0…slot:9 or secure-attention)`,
  );
}

export function parseChord(text: string, actionText: string, where: string): Chord {
  const parts = text.split('+').map((p) => p.trim());
  if (parts.length < 2 || parts.some((p) => p === ''))
    throw new HotkeyConfigError(`${where}: chord '${text}' must be modifiers and one key, e.g. 'Ctrl+1'`);
  const keyPart = parts[parts.length - 1];
  const modifiers = new Set<Modifier>();
  for (const p of parts.slice(0, -1)) {
    const m = MODIFIER_NAMES[p.toLowerCase()];
    if (!m)
      throw new HotkeyConfigError(
        `${where}: '${p}' in '${text}' is not a modifier (Ctrl, Shift, Alt, Super)`,
      );
    if (modifiers.has(m)) throw new HotkeyConfigError(`${where}: '${text}' names ${m} twice`);
    modifiers.add(m);
  }
  const key = keyCodeByName(keyPart);
  if (key === undefined) throw new HotkeyConfigError(`${where}: unknown key '${keyPart}' in '${text}'`);
  if (MODIFIER_OF_KEY.has(key))
    throw new HotkeyConfigError(`${where}: '${text}' must end in a non-modifier key`);
  const canonical = [...MODIFIER_ORDER.filter((m) => modifiers.has(m)), keyName(key)].join('+');
  return {
    text: canonical,
    modifiers,
    key,
    action: parseAction(actionText, `${where} '${text}'`),
    actionText,
  };
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
  // An administrator's file (root's, writable by nobody else, a regular file: never a symlink to
  // a file whose first bytes a JSON error would quote, never a FIFO that would hold the start).
  const read = readDefinitionFile(path);
  if (!read.ok) throw new HotkeyConfigError(`${path}: ${read.reason}`);
  let doc: unknown;
  try {
    doc = JSON.parse(read.text);
  } catch (e) {
    throw new HotkeyConfigError(`${path}: ${(e as Error).message}`);
  }
  const hk = (doc as { hotkeys?: unknown })?.hotkeys;
  if (!hk || typeof hk !== 'object' || Array.isArray(hk))
    throw new HotkeyConfigError(`${path}: expected an object { "hotkeys": { "<chord>": "<action>" } }`);
  return buildChords(hk as Record<string, string>, path);
}

/** What the pipeline does with one EV_KEY event. */
export type KeyDecision =
  /** Forward it — after the presses of `flushFirst` (held-back modifiers, in press order). */
  | { kind: 'pass'; flushFirst: readonly number[] }
  /** A modifier that could start a chord: held back, nobody gets it yet. */
  | { kind: 'hold' }
  /** Nobody gets it (a chord's key or modifier, a repeat of a held-back modifier). */
  | { kind: 'swallow' }
  /** A chord matched on this press; this key and every modifier of the chord reach nobody. */
  | { kind: 'match'; chord: Chord };

/**
 * Per held key (< 0x100): `pending` = a modifier held back (nobody has seen it); `sent` = handed to
 * the router (some target may have seen it, so it can never be part of a chord); `hidden` = reaches
 * nobody, ever (a matched chord's keys, a pending modifier dropped by a focus change).
 */
type HeldState = 'pending' | 'sent' | 'hidden';

const NO_FLUSH: readonly number[] = Object.freeze([]);
const MODIFIER_BIT: Record<Modifier, number> = { Ctrl: 1, Shift: 2, Alt: 4, Super: 8 };
const maskOf = (mods: Iterable<Modifier>): number => {
  let m = 0;
  for (const x of mods) m |= MODIFIER_BIT[x];
  return m;
};

/**
 * The hotkey state machine, fed every EV_KEY event of every keyboard (physical state merged).
 *
 * THE RULE: neither the press, the repeats nor the release of ANY key of a matched chord — its
 * modifiers included — reaches any target. A key logger in a VM must not even learn that a chord
 * was pressed (before this, Ctrl went down in the VM and came back up when Ctrl+2 matched).
 *
 * How:
 *  - A chord is exact: it matches on the press of its key when exactly its modifiers are held (in
 *    any order, left or right), no other key (< 0x100) is down, and none of those modifiers has
 *    been forwarded (`sent`). Ctrl+Shift+1 is not Ctrl+1. Mouse buttons (≥ 0x100) do not count.
 *  - A modifier press that could start a chord (the modifiers held, itself included, are a subset
 *    of some configured chord's modifiers, nothing else is down and nothing held was forwarded) is
 *    HELD BACK (`hold`) — it is `pending`. Several can be pending, in press order (Ctrl, Alt of
 *    Ctrl+Alt+Backspace).
 *  - If the next key press completes a chord: `match`. The pending modifiers become `hidden`: they
 *    were never sent, and their repeats and releases are swallowed. The chord key's press, repeats
 *    and release are swallowed too.
 *  - Anything else that will be forwarded while modifiers are pending — any other key press,
 *    release or repeat, a mouse button, the wheel (the pipeline asks `flushPending` for non-key
 *    events) — comes with `flushFirst`: the pending presses go out first, in order, then the event.
 *    So Ctrl+C, Ctrl+click, Ctrl+wheel and Ctrl+Shift+1 reach the VM exactly as typed, in order.
 *  - A pending modifier released with nothing in between (a lone Alt tap opens Windows menus, a
 *    lone Shift switches IMEs): its press is flushed, then its release follows — a normal tap.
 *  - Autorepeat of a pending modifier is swallowed: it stays pending.
 *  - `destinationChanged` (Freeze, SetFocus, Lock, Unlock): pending modifiers are dropped — they
 *    were never sent to the old target, so nothing is stuck there, and the new target is not handed
 *    half a stroke; they become `hidden`.
 *  - Pointer motion (REL_X/REL_Y, EV_ABS) and events the router never forwards (EV_MSC scan codes
 *    that precede every key of a real keyboard) do NOT flush: motion may overtake a pending
 *    modifier. Otherwise a jittering mouse or touchpad — or the MSC_SCAN in the chord key's own
 *    frame — would spoil every hotkey and type Ctrl+2 into the VM. Nothing is lost by it: a
 *    modifier changes nothing about motion until a click, and the click flushes it first.
 */
export class HotkeyMatcher {
  private readonly held = new Map<number, HeldState>();
  private pending: number[] = [];
  private byKey = new Map<number, Chord[]>();
  /** startable[mask]: some chord's modifiers include every modifier of `mask`. */
  private startable: boolean[] = [];

  constructor(private chords: Chord[]) {
    this.setChords(chords);
  }

  setChords(chords: Chord[]): void {
    this.chords = chords;
    this.byKey = new Map();
    for (const c of chords) this.byKey.set(c.key, [...(this.byKey.get(c.key) ?? []), c]);
    this.startable = Array.from(
      { length: 16 },
      (_, mask) => mask !== 0 && chords.some((c) => (mask & ~maskOf(c.modifiers)) === 0),
    );
  }

  list(): Chord[] {
    return this.chords;
  }

  onKey(code: number, value: number): KeyDecision {
    // Mouse and tablet buttons (BTN_* ≥ 0x100) are not keys: a held drag does not spoil a chord.
    if (code >= 0x100) return this.pass();
    const state = this.held.get(code);
    if (value === 0) {
      // A pending modifier's release (a lone tap) flushes it too: its press first, then this.
      const d: KeyDecision = state === 'hidden' ? { kind: 'swallow' } : this.pass();
      this.held.delete(code);
      return d;
    }
    if (value !== 1 || state !== undefined) {
      // Autorepeat (or a press of a key already down: treated as one).
      return state === 'pending' || state === 'hidden' ? { kind: 'swallow' } : this.pass();
    }
    const modifier = MODIFIER_OF_KEY.get(code);
    const heldMods = this.heldModifierMask();
    if (modifier) {
      if (heldMods >= 0 && this.startable[heldMods | MODIFIER_BIT[modifier]]) {
        this.held.set(code, 'pending');
        this.pending.push(code);
        return { kind: 'hold' };
      }
      return this.passPress(code);
    }
    const candidates = heldMods > 0 ? this.byKey.get(code) : undefined;
    const chord = candidates?.find((c) => maskOf(c.modifiers) === heldMods);
    if (!chord) return this.passPress(code);
    for (const k of this.pending) this.held.set(k, 'hidden');
    this.pending = [];
    this.held.set(code, 'hidden');
    return { kind: 'match', chord };
  }

  /** The pending modifiers, in press order, now forwarded (the caller sends their presses). */
  flushPending(): readonly number[] {
    if (!this.pending.length) return NO_FLUSH;
    const out = this.pending;
    this.pending = [];
    for (const k of out) this.held.set(k, 'sent');
    return out;
  }

  /** The destination changed: pending modifiers were never sent; drop them for good. */
  destinationChanged(): void {
    for (const k of this.pending) this.held.set(k, 'hidden');
    this.pending = [];
  }

  /** Modifiers held back now, in press order (tests and diagnostics). */
  pendingKeys(): number[] {
    return [...this.pending];
  }

  /** Keys the matcher believes are down. */
  isDown(code: number): boolean {
    return this.held.has(code);
  }

  /**
   * The modifiers held, as a mask; -1 when no chord can match now: a non-modifier key is down, or
   * a held modifier was forwarded (its target would see the chord's modifier).
   */
  private heldModifierMask(): number {
    let mask = 0;
    for (const [k, st] of this.held) {
      const m = MODIFIER_OF_KEY.get(k);
      if (!m || st === 'sent') return -1;
      mask |= MODIFIER_BIT[m];
    }
    return mask;
  }

  private pass(): KeyDecision {
    return { kind: 'pass', flushFirst: this.flushPending() };
  }

  private passPress(code: number): KeyDecision {
    const d = this.pass();
    this.held.set(code, 'sent');
    return d;
  }
}
