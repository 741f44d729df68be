/**
 * Signals are trusted by who sent them: a subscription to a well-known name's signals
 * (org.bulkhead.Input1's PropertiesChanged, the bus daemon's NameOwnerChanged) must take them from
 * the current owner of that name only. Any local uid may send a signal straight to a connection
 * that owns no name (the switcher's) or not yet (a daemon starting): the bus daemon delivers a
 * signal with a destination whatever the receiver's match rules say, so only the client can tell
 * it from the owner's. On a private bus with the real policy; the spoofer runs as nobody.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import {
  BusClient,
  Message,
  Variant,
  accountIds,
  connectBus,
  startPrivateBus,
  unwrap,
  type MessageBus,
} from './index';
import { sendSignalsAs } from './testing/run-as';

const isRoot = process.getuid?.() === 0;
/** The connection's unique name (dbus-next sets it on Hello; its types leave it out). */
const uniqueName = (bus: MessageBus): string => (bus as unknown as { name: string }).name;

test(
  "a signal sent straight to a subscriber by a peer that does not own the name is ignored (the owner's still count)",
  { skip: !isRoot && 'needs root to act as nobody' },
  async () => {
    const nobody = accountIds('nobody');
    assert.ok(nobody);
    const bus = await startPrivateBus({ mode: 'system' });
    const daemon = await connectBus(bus.address);
    const switcher = await connectBus(bus.address);
    try {
      await daemon.requestName(BUS_NAMES.input, 4);
      const client = new BusClient(switcher, 10_000);
      const changes: Array<{ sender: string; props: unknown }> = [];
      let gotOwners!: () => void;
      const ownersDone = new Promise<void>((r) => (gotOwners = r));
      await client.subscribe(
        {
          sender: BUS_NAMES.input,
          path: INPUT_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
        },
        (m) => {
          changes.push({ sender: m.sender, props: unwrap(m.body[1]) });
          if ((unwrap(m.body[1]) as { Locked?: boolean }).Locked === true) gotOwners();
        },
      );
      const owners: Array<string | null> = [];
      await client.watchNameOwner(BUS_NAMES.input, (o) => owners.push(o));
      assert.deepEqual(owners, [uniqueName(daemon)]);

      const unlocked = {
        path: INPUT_PATH,
        interface: 'org.freedesktop.DBus.Properties',
        member: 'PropertiesChanged',
        signature: 'sa{sv}as',
        body: ['org.bulkhead.Input1', { Locked: { variant: ['b', false] } }, []],
      };
      const stolen = {
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'NameOwnerChanged',
        signature: 'sss',
        body: [BUS_NAMES.input, uniqueName(daemon), ':1.999'],
      };
      const spoofer = await sendSignalsAs(nobody, bus.address, [
        { destination: uniqueName(switcher), ...unlocked },
        { destination: uniqueName(switcher), ...stolen },
        unlocked,
        stolen,
      ]);

      // The real owner's signal, sent after the spoofer's were routed, arrives after them.
      daemon.send(
        new Message({
          type: 4,
          path: INPUT_PATH,
          interface: 'org.freedesktop.DBus.Properties',
          member: 'PropertiesChanged',
          signature: 'sa{sv}as',
          body: ['org.bulkhead.Input1', { Locked: new Variant('b', true) }, []],
        }),
      );
      await ownersDone;
      assert.deepEqual(
        changes,
        [{ sender: uniqueName(daemon), props: { Locked: true } }],
        `the spoofer was ${spoofer}`,
      );
      assert.deepEqual(
        owners,
        [uniqueName(daemon)],
        'a NameOwnerChanged not sent by the bus daemon was believed',
      );
    } finally {
      switcher.disconnect();
      daemon.disconnect();
      await bus.stop();
    }
  },
);
