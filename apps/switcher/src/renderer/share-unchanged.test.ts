import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shareUnchanged } from './share-unchanged';

test('an equal value comes back as the previous object, however deep', () => {
  const prev = { vms: [{ path: '/a', state: 'running', tags: ['x'] }], daemons: { vm: { up: true } }, n: 1 };
  const next = JSON.parse(JSON.stringify(prev)) as typeof prev;
  assert.equal(shareUnchanged(prev, next), prev);
});

test('one changed property: a new top object, every untouched part shared', () => {
  const prev = {
    activeVm: '/',
    vms: [
      { path: '/a', state: 'running' },
      { path: '/b', state: 'stopped' },
    ],
    daemons: { vm: { up: true }, usb: { up: true } },
  };
  const next = JSON.parse(JSON.stringify(prev)) as typeof prev;
  next.vms[1].state = 'starting';
  const out = shareUnchanged(prev, next);
  assert.notEqual(out, prev);
  assert.equal(out.daemons, prev.daemons);
  assert.equal(out.vms[0], prev.vms[0], 'the VM that did not change keeps its object');
  assert.notEqual(out.vms[1], prev.vms[1]);
  assert.deepEqual(out, next, 'the result is the new value');
});

test('list items are matched by path, so an added or reordered item keeps the others', () => {
  const a = { path: '/a', state: 'running' };
  const b = { path: '/b', state: 'running' };
  const out = shareUnchanged([a, b], [{ path: '/c', state: 'stopped' }, { ...b }, { ...a }]);
  assert.equal(out[1], b);
  assert.equal(out[2], a);
  assert.deepEqual(out[0], { path: '/c', state: 'stopped' });
});

test('a removed key, an added key and a changed type are changes', () => {
  const prev: Record<string, unknown> = { a: 1, b: 2 };
  assert.notEqual(shareUnchanged(prev, { a: 1 }), prev);
  assert.notEqual(shareUnchanged(prev, { a: 1, b: 2, c: 3 }), prev);
  assert.deepEqual(shareUnchanged<unknown>({ a: [1] }, { a: { 0: 1 } }), { a: { 0: 1 } });
  assert.deepEqual(shareUnchanged<unknown>({ a: null }, { a: {} }), { a: {} });
});

test('shorter and longer arrays are changes; an emptied array is the new one', () => {
  const prev = [1, 2, 3];
  assert.deepEqual(shareUnchanged(prev, [1, 2]), [1, 2]);
  assert.deepEqual(shareUnchanged(prev, [1, 2, 3, 4]), [1, 2, 3, 4]);
  const empty: number[] = [];
  assert.equal(shareUnchanged(prev, empty), empty);
});
