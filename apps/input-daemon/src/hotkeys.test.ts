import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildChords, HotkeyConfigError, HotkeyMatcher, loadHotkeysFile, parseChord } from './hotkeys';

const CTRL = 29, RCTRL = 97, SHIFT = 42, ALT = 56, KEY_1 = 2, KEY_2 = 3, KEY_0 = 11, C = 46, BACKSPACE = 14, DEL = 111;

test('Ctrl+2 (left or right Ctrl) matches slot 2 and lists the held Ctrl for release', () => {
  for (const ctrl of [CTRL, RCTRL]) {
    const m = new HotkeyMatcher(buildChords());
    assert.deepEqual(m.onKey(ctrl, 1), { kind: 'pass' });
    const d = m.onKey(KEY_2, 1);
    assert.equal(d.kind, 'match');
    if (d.kind !== 'match') return;
    assert.deepEqual(d.chord.action, { kind: 'slot', slot: 2 });
    assert.deepEqual(d.release, [ctrl]);
    assert.deepEqual(m.onKey(KEY_2, 2), { kind: 'swallow' }, 'autorepeat of the chord key');
    assert.deepEqual(m.onKey(KEY_2, 0), { kind: 'swallow' });
    assert.deepEqual(m.onKey(ctrl, 0), { kind: 'pass' }, 'the router drops it: its press was released already');
  }
});

test('chords are exact: Ctrl+Shift+1 is not Ctrl+1, and a held letter spoils the chord', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(CTRL, 1);
  m.onKey(SHIFT, 1);
  assert.deepEqual(m.onKey(KEY_1, 1), { kind: 'pass' });
  m.onKey(KEY_1, 0);
  m.onKey(SHIFT, 0);
  m.onKey(C, 1);
  assert.deepEqual(m.onKey(KEY_1, 1), { kind: 'pass' });
});

test('Ctrl+C passes; Ctrl+0 goes to the switcher', () => {
  const m = new HotkeyMatcher(buildChords());
  m.onKey(CTRL, 1);
  assert.deepEqual(m.onKey(C, 1), { kind: 'pass' });
  m.onKey(C, 0);
  const d = m.onKey(KEY_0, 1);
  assert.ok(d.kind === 'match' && d.chord.actionText === 'slot:0');
});

test('modifier order does not matter, and the secure-attention default leaves Ctrl+Alt+Del to the guest', () => {
  const m = new HotkeyMatcher(buildChords({ 'Shift+Ctrl+1': 'slot:5' }));
  m.onKey(SHIFT, 1);
  m.onKey(CTRL, 1);
  const d = m.onKey(KEY_1, 1);
  assert.ok(d.kind === 'match' && d.chord.text === 'Ctrl+Shift+1' && d.release.length === 2);

  const sas = new HotkeyMatcher(buildChords());
  sas.onKey(ALT, 1);
  sas.onKey(CTRL, 1);
  assert.deepEqual(sas.onKey(DEL, 1), { kind: 'pass' });
  sas.onKey(DEL, 0);
  const s = sas.onKey(BACKSPACE, 1);
  assert.ok(s.kind === 'match' && s.chord.action.kind === 'secure-attention');
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
  assert.throws(() => loadHotkeysFile(bad), (e: unknown) => e instanceof HotkeyConfigError && e.message.includes(bad) && /Banana/.test(e.message));
  writeFileSync(bad, '{ nope');
  assert.throws(() => loadHotkeysFile(bad), (e: unknown) => e instanceof HotkeyConfigError && e.message.startsWith(bad));
  assert.throws(() => parseChord('Ctrl+1', 'slot:12', 'x'), /unknown action 'slot:12'/);
  assert.throws(() => parseChord('1', 'slot:1', 'x'), /modifiers and one key/);
});

test('a held mouse button does not spoil a chord', () => {
  const m = new HotkeyMatcher(buildChords());
  assert.deepEqual(m.onKey(0x110, 1), { kind: 'pass' });
  m.onKey(CTRL, 1);
  assert.equal(m.onKey(KEY_2, 1).kind, 'match');
});
