import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildChords, HotkeyConfigError, HotkeyMatcher, loadHotkeysFile, parseChord } from './hotkeys';

const CTRL = 29,
  RCTRL = 97,
  SHIFT = 42,
  ALT = 56,
  KEY_1 = 2,
  KEY_2 = 3,
  KEY_0 = 11,
  C = 46,
  BACKSPACE = 14,
  DEL = 111;

const PASS = { kind: 'pass', flushFirst: [] };

test('Ctrl+2 (left or right Ctrl): Ctrl is held back, then the match hides Ctrl and 2 for their whole stroke', () => {
  for (const ctrl of [CTRL, RCTRL]) {
    const m = new HotkeyMatcher(buildChords());
    assert.deepEqual(m.onKey(ctrl, 1), { kind: 'hold' });
    assert.deepEqual(
      m.onKey(ctrl, 2),
      { kind: 'swallow' },
      'autorepeat of a pending modifier keeps it pending',
    );
    assert.deepEqual(m.pendingKeys(), [ctrl]);
    const d = m.onKey(KEY_2, 1);
    assert.equal(d.kind, 'match');
    if (d.kind !== 'match') return;
    assert.deepEqual(d.chord.action, { kind: 'slot', slot: 2 });
    assert.deepEqual(m.pendingKeys(), []);
    assert.deepEqual(m.onKey(KEY_2, 2), { kind: 'swallow' }, 'autorepeat of the chord key');
    assert.deepEqual(m.onKey(ctrl, 2), { kind: 'swallow' }, 'autorepeat of the chord modifier');
    assert.deepEqual(m.onKey(KEY_2, 0), { kind: 'swallow' });
    assert.deepEqual(
      m.onKey(ctrl, 0),
      { kind: 'swallow' },
      'the chord modifier release reaches nobody either',
    );
    assert.deepEqual(m.onKey(KEY_2, 1), PASS, 'a plain 2 afterwards is typed');
  }
});

test('a pending modifier is flushed, in order, before whatever comes next that is not the chord', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(CTRL, 1);
  assert.deepEqual(m.onKey(C, 1), { kind: 'pass', flushFirst: [CTRL] }, 'Ctrl+C');
  assert.deepEqual(m.onKey(C, 0), PASS);
  assert.equal(
    m.onKey(KEY_2, 1).kind,
    'pass',
    'Ctrl already reached the VM: Ctrl+2 can no longer be a chord',
  );
  m.onKey(KEY_2, 0);
  m.onKey(CTRL, 0);
  assert.deepEqual(m.onKey(ALT, 1), { kind: 'hold' });
  assert.deepEqual(
    m.onKey(ALT, 0),
    { kind: 'pass', flushFirst: [ALT] },
    'a lone Alt tap: its press, then its release',
  );
  assert.deepEqual(m.onKey(SHIFT, 1), PASS, 'no chord uses Shift by default: not held back');
  m.onKey(SHIFT, 0);
  m.onKey(CTRL, 1);
  assert.deepEqual(m.onKey(0x110, 1), { kind: 'pass', flushFirst: [CTRL] }, 'Ctrl+click');
});

test('chords are exact: Ctrl+Shift+1 is not Ctrl+1, and a held letter spoils the chord', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(CTRL, 1);
  assert.deepEqual(m.onKey(SHIFT, 1), { kind: 'pass', flushFirst: [CTRL] }, 'Ctrl+Shift starts no chord');
  assert.deepEqual(m.onKey(KEY_1, 1), PASS);
  m.onKey(KEY_1, 0);
  m.onKey(SHIFT, 0);
  m.onKey(CTRL, 0);
  m.onKey(C, 1);
  assert.deepEqual(m.onKey(CTRL, 1), PASS, 'a letter is down: Ctrl cannot start a chord');
  assert.deepEqual(m.onKey(KEY_1, 1), PASS);
});

test('Ctrl+0 goes to the switcher', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(RCTRL, 1);
  const d = m.onKey(KEY_0, 1);
  assert.ok(d.kind === 'match' && d.chord.actionText === 'slot:0');
});

test('modifier order does not matter; Ctrl+Alt are both held back for Ctrl+Alt+Backspace, Ctrl+Alt+Del goes to the guest', () => {
  const m = new HotkeyMatcher(buildChords({ 'Shift+Ctrl+1': 'slot:5' }));
  assert.deepEqual(m.onKey(SHIFT, 1), { kind: 'hold' });
  assert.deepEqual(m.onKey(CTRL, 1), { kind: 'hold' });
  const d = m.onKey(KEY_1, 1);
  assert.ok(d.kind === 'match' && d.chord.text === 'Ctrl+Shift+1');

  const sas = new HotkeyMatcher(buildChords());
  assert.deepEqual(sas.onKey(ALT, 1), { kind: 'hold' });
  assert.deepEqual(sas.onKey(CTRL, 1), { kind: 'hold' });
  assert.deepEqual(sas.onKey(DEL, 1), { kind: 'pass', flushFirst: [ALT, CTRL] });
  sas.onKey(DEL, 0);
  sas.onKey(CTRL, 0);
  sas.onKey(ALT, 0);
  sas.onKey(CTRL, 1);
  sas.onKey(ALT, 1);
  const s = sas.onKey(BACKSPACE, 1);
  assert.ok(s.kind === 'match' && s.chord.action.kind === 'secure-attention');
  assert.deepEqual(sas.onKey(ALT, 0), { kind: 'swallow' });
});

test('a destination change drops pending modifiers for good: no late press, no release', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(CTRL, 1);
  m.destinationChanged();
  assert.deepEqual(m.pendingKeys(), []);
  assert.deepEqual(m.onKey(C, 1), PASS, 'C goes alone: the new target gets no half Ctrl stroke');
  assert.deepEqual(m.onKey(CTRL, 0), { kind: 'swallow' });
});

test('a hotkeys file overrides defaults; bad entries name the file and the chord', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hotkeys-'));
  const good = join(dir, 'good.json');
  writeFileSync(good, JSON.stringify({ hotkeys: { 'Ctrl+9': 'none', 'Super+Esc': 'secure-attention' } }));
  const chords = loadHotkeysFile(good).map((c) => c.text);
  assert.ok(!chords.includes('Ctrl+9'));
  assert.ok(chords.includes('Super+Esc') && chords.includes('Ctrl+1'));
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ hotkeys: { 'Ctrl+Banana': 'slot:1' } }));
  assert.throws(
    () => loadHotkeysFile(bad),
    (e: unknown) => e instanceof HotkeyConfigError && e.message.includes(bad) && /Banana/.test(e.message),
  );
  writeFileSync(bad, '{ nope');
  assert.throws(
    () => loadHotkeysFile(bad),
    (e: unknown) => e instanceof HotkeyConfigError && e.message.startsWith(bad),
  );
  // A symlink to another file is not followed: its first bytes would be quoted in a JSON error.
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'root:$y$secret-hash');
  const link = join(dir, 'link.json');
  symlinkSync(secret, link);
  assert.throws(
    () => loadHotkeysFile(link),
    (e: unknown) =>
      e instanceof HotkeyConfigError &&
      /not a regular file \(symlink\)/.test(e.message) &&
      !e.message.includes('root:'),
  );
  const writable = join(dir, 'writable.json');
  writeFileSync(writable, JSON.stringify({ hotkeys: { 'Ctrl+1': 'none' } }));
  chmodSync(writable, 0o666);
  assert.throws(() => loadHotkeysFile(writable), /writable by group and others/);
  assert.throws(() => parseChord('Ctrl+1', 'slot:12', 'x'), /unknown action 'slot:12'/);
  assert.throws(() => parseChord('1', 'slot:1', 'x'), /modifiers and one key/);
});

test('a held mouse button does not spoil a chord', () => {
  const m = new HotkeyMatcher(buildChords());
  assert.deepEqual(m.onKey(0x110, 1), PASS);
  assert.deepEqual(m.onKey(CTRL, 1), { kind: 'hold' });
  assert.equal(m.onKey(KEY_2, 1).kind, 'match');
});
