import { deflateSync } from 'node:zlib';
import { BulkheadError } from '@bulkhead/contract';
import { TypedEmitter } from '@bulkhead/common';
import type { VmDefinition } from '../config';
import type { BackendEvents, RunningVm, UsbAttachRequest, VmBackend } from '../backend/backend';

interface FakeVm {
  def: VmDefinition;
  state: 'running' | 'paused';
  pid: number;
  usb: Map<string, [number, number]>;
}

/**
 * In-memory backend for unit tests of the core: no processes. Tests make it fail on purpose
 * (`failNext`), simulate a crash (`crash`) and pretend VMs survived a daemon restart (`survivors`).
 */
export class FakeBackend extends TypedEmitter<BackendEvents> implements VmBackend {
  readonly name = 'fake';
  /** It stands in for either real backend in tests of the core (no QMP: not a capability it has). */
  readonly runs = ['qemu', 'xen'] as const;
  readonly vms = new Map<string, FakeVm>();
  /** Ids that `adopt` finds running, as if left by an earlier daemon process. */
  readonly survivors = new Set<string>();
  /** Ids whose guest rebooted while no daemon ran (with why), as Xen's backend finds them. */
  readonly rebootedAway = new Map<string, string>();
  readonly calls: string[] = [];
  private readonly failures = new Map<string, BulkheadError>();
  private nextPid = 1000;
  /** Resolves start() only when the test calls this (to hold a switch in starting-vm). */
  startGate: Promise<void> | null = null;

  failNext(
    op: 'start' | 'stop' | 'pause' | 'screenshot' | 'attachUsb',
    error = new BulkheadError('BackendFailed', `fake ${op} failure`),
  ): void {
    this.failures.set(op, error);
  }

  private check(op: string): void {
    const e = this.failures.get(op);
    if (e) {
      this.failures.delete(op);
      throw e;
    }
  }

  private get(vmId: string): FakeVm {
    const vm = this.vms.get(vmId);
    if (!vm) throw new BulkheadError('InvalidState', `fake VM ${vmId} is not running`);
    return vm;
  }

  async accelerator(): Promise<string> {
    return 'tcg';
  }
  async create(def: VmDefinition): Promise<void> {
    this.calls.push(`create ${def.id}`);
  }
  async start(def: VmDefinition): Promise<RunningVm> {
    this.calls.push(`start ${def.id}`);
    if (this.startGate) await this.startGate;
    this.check('start');
    const pid = this.nextPid++;
    this.vms.set(def.id, { def, state: 'running', pid, usb: new Map() });
    return {
      handle: { kind: 'pid', pid },
      inputQmpSocket: `/fake/${def.id}/input-qmp.sock`,
      adopted: false,
      state: 'running',
    };
  }
  async adopt(def: VmDefinition): Promise<RunningVm | null> {
    if (!this.survivors.has(def.id)) return null;
    const pid = this.nextPid++;
    this.vms.set(def.id, { def, state: 'running', pid, usb: new Map() });
    return {
      handle: { kind: 'pid', pid },
      inputQmpSocket: `/fake/${def.id}/input-qmp.sock`,
      adopted: true,
      state: 'running',
    };
  }
  rebootedWhileAway(vmId: string): string | null {
    const why = this.rebootedAway.get(vmId) ?? null;
    this.rebootedAway.delete(vmId);
    return why;
  }
  async stop(vmId: string): Promise<{ killed: boolean }> {
    this.calls.push(`stop ${vmId}`);
    this.check('stop');
    this.get(vmId);
    this.vms.delete(vmId);
    return { killed: true };
  }
  async kill(vmId: string): Promise<void> {
    this.get(vmId);
    this.vms.delete(vmId);
  }
  async pause(vmId: string): Promise<void> {
    this.check('pause');
    this.get(vmId).state = 'paused';
  }
  async resume(vmId: string): Promise<void> {
    this.get(vmId).state = 'running';
  }
  async screenshot(vmId: string): Promise<Buffer> {
    this.check('screenshot');
    return fakePng(this.get(vmId).def.color);
  }
  async attachUsb(vmId: string, req: UsbAttachRequest): Promise<string> {
    this.check('attachUsb');
    const handle = `usbhost-b${req.bus}-a${req.address}`;
    this.get(vmId).usb.set(handle, [req.bus, req.address]);
    return handle;
  }
  async detachUsb(vmId: string, handle: string): Promise<void> {
    if (!this.get(vmId).usb.delete(handle))
      throw new BulkheadError('NoSuchDevice', `no USB attachment ${handle}`);
  }
  async listUsb(vmId: string): Promise<Array<[string, number, number]>> {
    return [...this.get(vmId).usb].map(([h, [b, a]]) => [h, b, a]);
  }
  async detachAll(): Promise<void> {
    this.vms.clear();
  }
  async stopAll(): Promise<void> {
    for (const id of [...this.vms.keys()]) await this.stop(id);
  }

  /** Simulate the hypervisor dying under a VM. */
  crash(vmId: string, reason = 'fake qemu exited with signal SIGKILL'): void {
    this.vms.delete(vmId);
    this.emit('state', vmId, 'crashed', reason);
  }
}

/** A 2x2 PNG of one color: enough for clients that decode the screenshot. */
export function fakePng(color: string): Buffer {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(2, 0);
  ihdr.writeUInt32BE(2, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const row = Buffer.from([0, r, g, b, r, g, b]);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat([row, row]))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
