import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { DBusError, Message, type MessageBus } from 'dbus-next';
import { BusClient } from './index';

/**
 * A fake bus connection that reproduces what dbus-next does when a reply and a signal arrive in
 * one socket read: the signal's handlers run synchronously, before the code awaiting the reply
 * resumes. Seen in the image under TCG: the switcher then believed input-daemon was not running.
 */
class FakeRacyBus extends EventEmitter {
  constructor(private readonly owner: string) {
    super();
  }
  async call(msg: Message): Promise<Message> {
    if (msg.member === 'AddMatch') return { body: [] } as unknown as Message;
    if (msg.member === 'GetNameOwner') {
      // The bus answered "no owner", then the name was taken; both are read in one chunk.
      const signal = new Message({
        type: 4,
        sender: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'NameOwnerChanged',
        signature: 'sss',
        body: [msg.body[0], '', this.owner],
      });
      const reply = Promise.reject(new DBusError('org.freedesktop.DBus.Error.NameHasNoOwner', 'no owner'));
      reply.catch(() => undefined);
      this.emit('message', signal);
      return reply;
    }
    throw new Error(`unexpected call ${msg.member}`);
  }
}

test('watchNameOwner keeps the newer NameOwnerChanged when it arrives before the stale GetNameOwner answer resumes', async () => {
  const client = new BusClient(new FakeRacyBus(':1.7') as unknown as MessageBus);
  const seen: Array<string | null> = [];
  await client.watchNameOwner('org.bulkhead.Input1', (o) => seen.push(o));
  assert.equal(seen.at(-1), ':1.7', `the last word was ${JSON.stringify(seen)}`);
});
