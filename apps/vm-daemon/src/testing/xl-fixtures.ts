/**
 * Outputs of xl for the unit tests. The shape follows Xen 4.17's `xl list -l` (libxl_domain_config
 * as JSON, keyed unions as "type.<member>", PCI functions as {"bdf": {...}}); trimmed to the fields
 * the backend reads plus a few it must ignore.
 */
export interface FixtureDomain {
  domid: number;
  name: string;
  type?: 'pv' | 'pvh' | 'hvm';
  pci?: string[];
  usbdevs?: Array<{ ctrl: number; port: number; hostbus: number; hostaddr: number }>;
  usbctrl?: boolean;
  /** Paused by the toolstack (`xl pause`): the 'p' of `xl list`'s State column. */
  paused?: boolean;
}

/** `xl list <domid>`'s human output for `d` (the only place xl shows the run state). */
export function xlListHuman(d: FixtureDomain): string {
  const state = `--${d.paused ? 'p' : '-'}---`;
  return (
    'Name                                        ID   Mem VCPUs\tState\tTime(s)\n' +
    `${d.name.padEnd(40)} ${String(d.domid).padStart(5)}    64     1     ${state}       0.4\n`
  );
}

export function xlListJson(doms: FixtureDomain[], includeDom0 = true): string {
  const entries = [
    ...(includeDom0 ? [{ domid: 0, name: 'Domain-0', type: 'pv' as const }] : []),
    ...doms,
  ].map((d) => ({
    domid: d.domid,
    config: {
      c_info: {
        type: d.type ?? 'pv',
        name: d.name,
        uuid: `00000000-0000-0000-0000-${String(d.domid).padStart(12, '0')}`,
        run_hotplug_scripts: 'True',
      },
      b_info: {
        max_vcpus: 1,
        avail_vcpus: [0],
        max_memkb: 65536,
        target_memkb: 65536,
        [`type.${d.type ?? 'pv'}`]: { kernel: '/boot/vmlinuz' },
        arch_arm: {},
      },
      ...(d.pci?.length
        ? {
            pcidevs: d.pci.map((p) => {
              const [dom, bus, devfn] = p.split(':');
              const [dev, fn] = devfn.split('.');
              return {
                bdf: {
                  domain: parseInt(dom, 16),
                  bus: parseInt(bus, 16),
                  dev: parseInt(dev, 16),
                  func: Number(fn),
                },
                vdevfn: 0,
                msitranslate: 'False',
                power_mgmt: 'False',
                permissive: 'False',
                seize: 'False',
                rdm_policy: 'invalid',
              };
            }),
          }
        : {}),
      ...(d.usbctrl
        ? { usbctrls: [{ type: 'devicemodel', devid: 0, version: 2, ports: 6, backend_domid: 0 }] }
        : {}),
      ...(d.usbdevs?.length
        ? {
            usbdevs: d.usbdevs.map((u) => ({
              ctrl: u.ctrl,
              port: u.port,
              'type.hostdev': { hostbus: u.hostbus, hostaddr: u.hostaddr },
            })),
          }
        : {}),
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'coredump_destroy',
    },
  }));
  return JSON.stringify(entries, null, 4) + '\n';
}
