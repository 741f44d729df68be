import { BulkheadError } from '@bulkhead/contract';
import type { PciGuest, PciPassthrough } from '../gpu-holder';

/**
 * A fake of the hypervisor's PCI pass-through: a tiny model of who a function is bound to in dom0
 * (`native` driver or the pciback `stub`) and which guest holds it, as Xen behaves: a function
 * held by a guest stays bound to pciback in dom0; attach needs it in pciback; a guest that dies
 * leaves its functions in pciback (kill). Every call is logged in `calls` ("detach personal
 * 0000:00:02.0", "detach -f ...", "reset ...", "assignable-add ...", ...). `failOn` makes the next
 * call matching a pattern fail with the given error.
 */
export class FakePciPassthrough implements PciPassthrough {
  guestList: PciGuest[] = [];
  readonly native = new Set<string>();
  readonly stub = new Set<string>();
  readonly calls: string[] = [];
  private nextDomid = 1;
  private failures: Array<{ re: RegExp; error: Error }> = [];
  /** While set, attach waits for it (a hand-off held in its attach). */
  attachGate: Promise<void> | null = null;
  /** While set, guests() waits for it (`xl list -l` slow under load); guestsCalls counts them. */
  guestsGate: Promise<void> | null = null;
  guestsCalls = 0;

  /** `fns` start bound to dom0's native driver (the laptop at boot). */
  constructor(fns: string[] = []) {
    for (const f of fns) this.native.add(f);
  }

  addGuest(name: string, pci: string[] = []): PciGuest {
    const g = { name, domid: this.nextDomid++, pci: [...pci] };
    for (const p of pci) {
      this.native.delete(p);
      this.stub.add(p);
    }
    this.guestList.push(g);
    return g;
  }

  /** The guest's domain ends (crash, destroy): libxl returns its functions to pciback. */
  kill(name: string): void {
    this.guestList = this.guestList.filter((g) => g.name !== name);
  }

  holderOf(bdf: string): string {
    const g = this.guestList.find((x) => x.pci.includes(bdf));
    return g ? g.name : this.native.has(bdf) ? 'dom0-native' : 'pciback';
  }

  failOn(re: RegExp, error: Error | string): void {
    this.failures.push({
      re,
      error: typeof error === 'string' ? new BulkheadError('BackendFailed', error) : error,
    });
  }

  private op(line: string): void {
    this.calls.push(line);
    const i = this.failures.findIndex((f) => f.re.test(line));
    if (i >= 0) throw this.failures.splice(i, 1)[0].error;
  }

  async guests(signal?: AbortSignal): Promise<PciGuest[]> {
    this.guestsCalls++;
    if (this.guestsGate)
      await Promise.race([
        this.guestsGate,
        new Promise((_, reject) =>
          signal?.addEventListener(
            'abort',
            () => reject(new BulkheadError('BackendFailed', 'xl list -l cancelled')),
            {
              once: true,
            },
          ),
        ),
      ]);
    return this.guestList.map((g) => ({ ...g, pci: [...g.pci] }));
  }
  async detach(guest: PciGuest, bdf: string, force = false): Promise<void> {
    this.op(`detach ${force ? '-f ' : ''}${guest.name} ${bdf}`);
    const g = this.guestList.find((x) => x.domid === guest.domid);
    if (!g || !g.pci.includes(bdf))
      throw new BulkheadError('BackendFailed', `${bdf} is not assigned to ${guest.name}`);
    g.pci = g.pci.filter((p) => p !== bdf);
  }
  async attach(guest: PciGuest, bdf: string): Promise<void> {
    this.op(`attach ${guest.name} ${bdf}`);
    if (this.attachGate) await this.attachGate;
    const g = this.guestList.find((x) => x.domid === guest.domid);
    if (!g) throw new BulkheadError('BackendFailed', `Domain ${guest.domid} does not exist`);
    if (!this.stub.has(bdf) || this.guestList.some((x) => x.pci.includes(bdf)))
      throw new BulkheadError('BackendFailed', `${bdf} is not assignable`);
    g.pci.push(bdf);
  }
  async reset(bdf: string): Promise<'ok'> {
    this.op(`reset ${bdf}`);
    return 'ok';
  }
  isAssignable(bdf: string): boolean {
    return this.stub.has(bdf);
  }
  async assignableAdd(bdf: string): Promise<void> {
    this.op(`assignable-add ${bdf}`);
    this.native.delete(bdf);
    this.stub.add(bdf);
  }
  async assignableRemove(bdf: string): Promise<void> {
    this.op(`assignable-remove ${bdf}`);
    if (this.guestList.some((x) => x.pci.includes(bdf)))
      throw new BulkheadError('BackendFailed', `${bdf} is assigned to a domain`);
    this.stub.delete(bdf);
    this.native.add(bdf);
  }
}
