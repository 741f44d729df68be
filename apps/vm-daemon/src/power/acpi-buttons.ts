/**
 * The power key and the lid switch, read where the kernel reports them: the evdev nodes of the
 * ACPI "Power Button" (KEY_POWER) and "Lid Switch" (SW_LID) devices. input-daemon leaves these
 * alone (their class is 'other': never grabbed), so reading them here takes nothing from it.
 * vm-daemon holds logind's block inhibitor for the keys it reads, so logind does not act on them
 * itself and power.json is the one policy.
 *
 * A keyboard that also has a power key (KEY_A present) is input-daemon's; its power key is not
 * read here.
 */
import { createReadStream, readdirSync, readFileSync, type ReadStream } from 'node:fs';
import { join } from 'node:path';

export const EV_KEY = 1;
export const EV_SW = 5;
export const KEY_A = 30;
export const KEY_POWER = 116;
export const SW_LID = 0;
/** struct input_event on 64-bit Linux: timeval (16), type u16, code u16, value s32. */
export const INPUT_EVENT_BYTES = 24;

/** Whether bit `bit` is set in a sysfs capability mask ("1 0 ffff…": words of 64 bits, most significant first). */
export function hasCapability(mask: string, bit: number): boolean {
  const words = mask.trim().split(/\s+/).reverse();
  const word = words[Math.floor(bit / 64)];
  if (!word) return false;
  try {
    return ((BigInt(`0x${word}`) >> BigInt(bit % 64)) & 1n) === 1n;
  } catch {
    return false;
  }
}

export interface ButtonDevice {
  node: string;
  name: string;
  power: boolean;
  lid: boolean;
}

/** The evdev nodes of power buttons and lid switches, from sysfs. */
export function findButtonDevices(sysClassInput = '/sys/class/input', dev = '/dev/input'): ButtonDevice[] {
  let entries: string[];
  try {
    entries = readdirSync(sysClassInput).filter((e) => /^event\d+$/.test(e));
  } catch {
    return [];
  }
  const read = (p: string): string => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  const out: ButtonDevice[] = [];
  for (const e of entries) {
    const base = join(sysClassInput, e, 'device');
    const keys = read(join(base, 'capabilities', 'key'));
    const sw = read(join(base, 'capabilities', 'sw'));
    const power = hasCapability(keys, KEY_POWER) && !hasCapability(keys, KEY_A);
    const lid = hasCapability(sw, SW_LID);
    if (power || lid) out.push({ node: join(dev, e), name: read(join(base, 'name')).trim(), power, lid });
  }
  return out;
}

/**
 * The keys logind must leave alone because vm-daemon reads them itself (its block inhibitor's
 * `what`): handle-power-key when a power button was found, handle-lid-switch when a lid switch
 * was ('' when neither: no lock is taken). The image's logind.conf.d ignores both keys anyway;
 * the lock says who handles them (systemd-inhibit --list) and covers a logind configured otherwise.
 */
export function inhibitedKeys(devices: ButtonDevice[]): string {
  return [
    devices.some((d) => d.power) && 'handle-power-key',
    devices.some((d) => d.lid) && 'handle-lid-switch',
  ]
    .filter(Boolean)
    .join(':');
}

/** Parse input events; calls `on` for a power key press and a lid closing. */
export function buttonEvents(on: (which: 'power-key' | 'lid') => void): (chunk: Buffer) => void {
  let rest = Buffer.alloc(0);
  return (chunk) => {
    const buf = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    let at = 0;
    for (; at + INPUT_EVENT_BYTES <= buf.length; at += INPUT_EVENT_BYTES) {
      const type = buf.readUInt16LE(at + 16);
      const code = buf.readUInt16LE(at + 18);
      const value = buf.readInt32LE(at + 20);
      if (type === EV_KEY && code === KEY_POWER && value === 1) on('power-key');
      else if (type === EV_SW && code === SW_LID && value === 1) on('lid');
    }
    rest = Buffer.from(buf.subarray(at));
  };
}

/** Reads every button device until closed. */
export class AcpiButtons {
  private readonly streams: ReadStream[] = [];

  constructor(
    readonly devices: ButtonDevice[],
    private readonly on: (which: 'power-key' | 'lid') => void,
    private readonly log: { info(msg: string): void; warn(msg: string): void },
  ) {}

  start(): void {
    for (const d of this.devices) {
      const s = createReadStream(d.node, { highWaterMark: INPUT_EVENT_BYTES * 16 });
      s.on('data', buttonEvents(this.on) as (chunk: string | Buffer) => void);
      s.on('error', (e) => this.log.warn(`${d.node} "${d.name}": ${e.message}`));
      this.streams.push(s);
      this.log.info(
        `reading ${d.node} "${d.name}" (${[d.power && 'power key', d.lid && 'lid'].filter(Boolean).join(', ')})`,
      );
    }
  }

  close(): void {
    for (const s of this.streams.splice(0)) s.destroy();
  }
}
