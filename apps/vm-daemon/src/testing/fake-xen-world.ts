import { FakeXlRunner } from './fake-xl-runner';
import { xlListHuman, xlListJson, type FixtureDomain } from './xl-fixtures';

/**
 * A FakeXlRunner that keeps a tiny model of Xen: `xl list -l` answers from `domains`, and
 * create/destroy/pci-attach/pci-detach/usbdev-* change it, so tests see the effect of each command.
 * `failOn` makes the next command matching a pattern fail with an xl-style message.
 */
export class FakeXenWorld extends FakeXlRunner {
  domains: FixtureDomain[] = [];
  /**
   * Domains Xen is still destroying: gone from `xl list -l`, but their names are still taken
   * (`xl domid` finds them, and `xl create` of the same name fails as libxl's rename does).
   */
  dying: FixtureDomain[] = [];
  /**
   * Like Xen 4.17 with a devicemodel USB controller: a hot-plugged USB device is recorded only in
   * xenstore (/libxl/<domid>/device/vusb/0/port/<n> = "<bus>-<addr>" here), not in `xl list -l`.
   */
  usbInXenstore = false;
  readonly xenstore = new Map<string, string>();
  private nextDomid = 1;
  private failures: Array<{ re: RegExp; stderr: string; before?: () => void }> = [];

  constructor(delayMs = 0) {
    super(delayMs);
    this.on(/^xl list -l( \d+)?$/, (line) => {
      const m = / (\d+)$/.exec(line);
      const doms = m ? this.domains.filter((d) => d.domid === Number(m[1])) : this.domains;
      if (m && !doms.length)
        return {
          code: 1,
          stderr: `libxl: error: libxl_domain.c:332:libxl_domain_info: Domain ${m[1]}:Domain not found`,
        };
      return { stdout: xlListJson(doms, !m) };
    });
    this.on(/^xl domid \S+$/, (line) => {
      const name = line.split(' ')[2];
      const d = [...this.domains, ...this.dying].find((x) => x.name === name);
      return d
        ? { stdout: `${d.domid}\n` }
        : { code: 1, stderr: `Can't get domid of domain name '${name}', maybe this domain does not exist.` };
    });
    this.on(/^xl create /, (line) =>
      this.guard(line, () => {
        const name = /\/([^/]+)\.cfg$/.exec(line)?.[1] ?? 'guest';
        const domid = this.nextDomid++;
        if ([...this.domains, ...this.dying].some((x) => x.name === name))
          throw new FakeXlError(
            `libxl: error: libxl_dom.c:0:libxl__domain_rename: Domain ${domid}:domain with name "${name}" already exists.\n` +
              `libxl: error: libxl_create.c:1296:initiate_domain_create: Domain ${domid}:cannot make domain: -6`,
          );
        this.domains.push({ domid, name, usbctrl: true });
      }),
    );
    this.on(/^xl (destroy|shutdown -F) \d+$/, (line) =>
      this.guard(line, () => {
        const id = Number(line.split(' ').pop());
        this.domains = this.domains.filter((d) => d.domid !== id);
      }),
    );
    // Xen counts the toolstack's pauses; one unpause too many fails (domain_unpause_by_systemcontroller).
    this.on(/^xl (pause|unpause) \d+$/, (line) =>
      this.guard(line, () => {
        const [, op, id] = line.split(' ');
        const d = this.dom(Number(id));
        if (op === 'unpause' && !d.paused)
          throw new FakeXlError(
            `libxl: error: libxl_domain.c:0:libxl_domain_unpause: Domain ${id}:Unpausing domain ${id}: Invalid argument`,
          );
        d.paused = op === 'pause';
      }),
    );
    this.on(/^xl list \d+$/, (line) => {
      const id = Number(line.split(' ')[2]);
      const d = this.domains.find((x) => x.domid === id);
      return d
        ? { stdout: xlListHuman(d) }
        : {
            code: 1,
            stderr: `libxl: error: libxl_domain.c:332:libxl_domain_info: Domain ${id}:Domain not found`,
          };
    });
    // xl cd-eject <domid> <vdev>: the domain must exist (the medium itself is not modelled).
    this.on(/^xl cd-eject \d+ \S+$/, (line) =>
      this.guard(line, () => void this.dom(Number(line.split(' ')[2]))),
    );
    this.on(/^xl pci-assignable-add /, (line) => this.guard(line, () => undefined));
    this.on(/^xl pci-(attach|detach) \d+ \S+$/, (line) =>
      this.guard(line, () => {
        const [, op, id, bdf] = line.split(' ');
        const d = this.dom(Number(id));
        d.pci = op === 'pci-attach' ? [...(d.pci ?? []), bdf] : (d.pci ?? []).filter((p) => p !== bdf);
      }),
    );
    this.on(/^xenstore-list \S+$/, (line) => {
      const dir = line.split(' ')[1] + '/';
      const kids = new Set(
        [...this.xenstore.keys()]
          .filter((k) => k.startsWith(dir))
          .map((k) => k.slice(dir.length).split('/')[0]),
      );
      return kids.size
        ? { stdout: [...kids].join('\n') + '\n' }
        : { code: 1, stderr: `xenstore-list: could not list path ${dir.slice(0, -1)}` };
    });
    this.on(/^xenstore-read \S+$/, (line) => {
      const v = this.xenstore.get(line.split(' ')[1]);
      return v === undefined ? { code: 1, stderr: '' } : { stdout: v + '\n' };
    });
    this.on(/^xl usbdev-attach \d+ hostbus=\d+ hostaddr=\d+$/, (line) =>
      this.guard(line, () => {
        const [, , id, b, a] = line.split(' ');
        const d = this.dom(Number(id));
        if (this.usbInXenstore) {
          const port = (p: number) => `/libxl/${id}/device/vusb/0/port/${p}`;
          for (let p = 1; p <= 6; p++) if (!this.xenstore.has(port(p))) this.xenstore.set(port(p), '');
          const free = [1, 2, 3, 4, 5, 6].find((p) => this.xenstore.get(port(p)) === '');
          if (!free)
            throw new FakeXlError(
              'libxl: error: libxl_usb.c:1049:libxl__device_usbdev_setdefault: No available port',
            );
          this.xenstore.set(port(free), `${b.split('=')[1]}-${a.split('=')[1]}`);
          return;
        }
        const port = (d.usbdevs?.length ?? 0) + 1;
        d.usbdevs = [
          ...(d.usbdevs ?? []),
          { ctrl: 0, port, hostbus: Number(b.split('=')[1]), hostaddr: Number(a.split('=')[1]) },
        ];
      }),
    );
    this.on(/^xl usbdev-detach \d+ \d+ \d+$/, (line) =>
      this.guard(line, () => {
        const [, , id, c, p] = line.split(' ').map((x, i) => (i >= 2 ? Number(x) : x)) as [
          string,
          string,
          number,
          number,
          number,
        ];
        const d = this.dom(id);
        const key = `/libxl/${id}/device/vusb/${c}/port/${p}`;
        if (this.usbInXenstore) {
          if (!this.xenstore.get(key))
            throw new FakeXlError(
              `libxl: error: libxl_usb.c:1700:libxl_ctrlport_to_device_usbdev: Unable to find USB device at ${c}/${p}`,
            );
          this.xenstore.set(key, '');
          return;
        }
        d.usbdevs = (d.usbdevs ?? []).filter((u) => !(u.ctrl === c && u.port === p));
      }),
    );
  }

  private dom(domid: number): FixtureDomain {
    const d = this.domains.find((x) => x.domid === domid);
    if (!d)
      throw new FakeXlError(
        `libxl: error: libxl_domain.c:1640:libxl__get_domid: Domain ${domid} does not exist`,
      );
    return d;
  }

  private guard(line: string, apply: () => void) {
    const i = this.failures.findIndex((f) => f.re.test(line));
    if (i >= 0) {
      const [f] = this.failures.splice(i, 1);
      f.before?.();
      return { code: 1, stderr: f.stderr };
    }
    try {
      apply();
      return { code: 0 };
    } catch (e) {
      if (e instanceof FakeXlError) return { code: 1, stderr: e.message };
      throw e;
    }
  }

  /** The next command matching `re` fails with `stderr` (after running `before`, e.g. a domain vanishing). */
  failOn(re: RegExp, stderr: string, before?: () => void): void {
    this.failures.push({ re, stderr, before });
  }

  add(d: Omit<FixtureDomain, 'domid'> & { domid?: number }): FixtureDomain {
    const dom = { ...d, domid: d.domid ?? this.nextDomid++ };
    this.nextDomid = Math.max(this.nextDomid, dom.domid + 1);
    this.domains.push(dom);
    return dom;
  }
}

class FakeXlError extends Error {}
