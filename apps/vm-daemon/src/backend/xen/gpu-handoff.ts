/**
 * GPU hand-off between VMs (implements switch-transaction.ts's GpuHandoff).
 *
 * The rule: at most one running VM holds the GPU, the active one; dom0 holds it (bound to
 * pciback, "assignable") while the switcher is active or when its owner is not running. A switch
 * that must move it runs, each step bounded by `stepTimeoutMs`:
 *   detach   xl pci-detach <holder> <bdf>         for every function held by a VM other than the target
 *   reset    /sys/bus/pci/devices/<bdf>/reset      where the device offers one (libxl also asks pciback
 *                                                  for an FLR on detach); a failing reset is reported,
 *                                                  not fatal: many devices have none
 *   attach   xl pci-attach <target> <bdf>          for every function of the target's GPU
 * Any failure undoes the steps done so far in reverse (attach → detach again, detach → re-attach to
 * the VM that held it, if it still exists) and throws a named error: BackendFailed with xl's words,
 * or Timeout. Step durations go to `lastReport` and, as `substeps` of the StepResult (or of the
 * thrown error), into LastSwitch.steps right after move-gpu (SwitchTransaction appends them).
 *
 * Who holds a function is read from `xl list -l` (config.pcidevs, which libxl updates on hot-plug),
 * never from human output.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { BulkheadError, vmIdFromPath, SWITCHER_PATH } from '@bulkhead/contract';
import type { Logger } from '@bulkhead/common';
import {
  skipped,
  type ErrorWithSubSteps,
  type GpuHandoff,
  type GpuSide,
  type StepResult,
  type SubSteps,
} from '../../switch-transaction';
import { parseXlListJson, type XlDomain } from './xl-list';
import { xl, type XlRunner } from './xl-runner';

/** One sub-step of a hand-off: 'detach 0000:00:03.0 from personal', its duration in µs, its outcome. */
export interface GpuStep {
  step: 'detach' | 'reset' | 'attach' | 'rollback-detach' | 'rollback-attach' | 'assignable-add';
  bdf: string;
  domain: string;
  durationUsec: bigint;
  outcome: 'ok' | 'failed' | 'unsupported';
  detail: string;
}

/** The sub-steps as LastSwitch lists them: ["gpu-detach:personal:0000:00:03.0", µs], ... */
const asSubSteps = (report: GpuStep[]): SubSteps =>
  report.map((r) => [`gpu-${r.step}:${r.domain}:${r.bdf}`, r.durationUsec]);

/** sysfs access (a fake in unit tests). */
export interface PciSysfs {
  /** True when the function is bound to pciback (assignable to guests). */
  isAssignable(bdf: string): boolean;
  /** Reset the function; 'unsupported' when the kernel offers no reset for it. */
  reset(bdf: string): 'ok' | 'unsupported';
}

export class RealPciSysfs implements PciSysfs {
  isAssignable(bdf: string): boolean {
    return existsSync(`/sys/bus/pci/drivers/pciback/${bdf}`);
  }
  reset(bdf: string): 'ok' | 'unsupported' {
    const f = `/sys/bus/pci/devices/${bdf}/reset`;
    if (!existsSync(f)) return 'unsupported';
    writeFileSync(f, '1');
    return 'ok';
  }
}

export interface XenGpuHandoffOptions {
  runner: XlRunner;
  log: Logger;
  sysfs?: PciSysfs;
  /** Bound of each xl step (default 45 s: one pci-attach took 26 s under TCG). */
  stepTimeoutMs?: number;
}

const nowUsec = () => process.hrtime.bigint() / 1000n;

export class XenGpuHandoff implements GpuHandoff {
  /** The sub-steps of the last hand-off (also when it failed). */
  lastReport: GpuStep[] = [];
  private readonly sysfs: PciSysfs;
  private readonly stepMs: number;

  constructor(private readonly opts: XenGpuHandoffOptions) {
    this.sysfs = opts.sysfs ?? new RealPciSysfs();
    this.stepMs = opts.stepTimeoutMs ?? 45_000;
  }

  /**
   * Once at boot: make every GPU function assignable (`xl pci-assignable-add`), so dom0's own
   * drivers let go of it before any VM asks. Already assignable functions are left alone.
   */
  async prepare(pciFunctions: string[]): Promise<GpuStep[]> {
    const steps: GpuStep[] = [];
    for (const bdf of [...new Set(pciFunctions)]) {
      if (this.sysfs.isAssignable(bdf)) continue;
      const s = nowUsec();
      await xl(this.opts.runner, ['pci-assignable-add', bdf], this.stepMs);
      steps.push({
        step: 'assignable-add',
        bdf,
        domain: 'Domain-0',
        durationUsec: nowUsec() - s,
        outcome: 'ok',
        detail: '',
      });
      this.opts.log.info(`${bdf} is assignable (pciback)`);
    }
    return steps;
  }

  private async domains(): Promise<XlDomain[]> {
    return parseXlListJson(await xl(this.opts.runner, ['list', '-l'], this.stepMs));
  }

  async handOff(from: GpuSide, to: GpuSide): Promise<StepResult> {
    const report: GpuStep[] = [];
    this.lastReport = report;
    if (from.pci.length === 0 && to.pci.length === 0) return skipped('no VM in this switch has a GPU');
    const toId = to.vm === SWITCHER_PATH ? null : vmIdFromPath(to.vm);
    const doms = await this.domains();
    const holderOf = (bdf: string) => doms.find((d) => d.domid !== 0 && d.pci.includes(bdf)) ?? null;
    const target = toId ? (doms.find((d) => d.name === toId) ?? null) : null;
    if (toId && to.pci.length && !target)
      throw new BulkheadError(
        'InvalidState',
        `GPU hand-off: ${toId} has no running domain to receive ${to.pci.join(', ')}`,
      );

    // Functions to take away: whatever of either GPU a domain other than the target holds.
    const detach: Array<{ bdf: string; dom: XlDomain }> = [];
    for (const bdf of [...new Set([...from.pci, ...to.pci])]) {
      const h = holderOf(bdf);
      if (h && h.name !== toId) detach.push({ bdf, dom: h });
    }
    const attach = target ? to.pci.filter((bdf) => !target.pci.includes(bdf)) : [];
    if (!detach.length && !attach.length)
      return skipped(toId ? `${toId} already holds its GPU` : 'no VM holds a GPU: dom0 has it');

    const done: Array<() => Promise<void>> = [];
    const run = async (step: GpuStep['step'], bdf: string, dom: XlDomain, args: string[]) => {
      const s = nowUsec();
      try {
        await xl(this.opts.runner, args, this.stepMs);
        report.push({ step, bdf, domain: dom.name, durationUsec: nowUsec() - s, outcome: 'ok', detail: '' });
      } catch (e) {
        report.push({
          step,
          bdf,
          domain: dom.name,
          durationUsec: nowUsec() - s,
          outcome: 'failed',
          detail: (e as Error).message,
        });
        throw e;
      }
    };
    try {
      for (const { bdf, dom } of detach) {
        await run('detach', bdf, dom, ['pci-detach', String(dom.domid), bdf]);
        done.push(() => run('rollback-attach', bdf, dom, ['pci-attach', String(dom.domid), bdf]));
      }
      for (const { bdf } of detach) {
        const s = nowUsec();
        let outcome: GpuStep['outcome'] = 'ok';
        let detail = '';
        try {
          outcome = this.sysfs.reset(bdf) === 'ok' ? 'ok' : 'unsupported';
        } catch (e) {
          outcome = 'failed';
          detail = (e as Error).message;
          this.opts.log.warn(
            `reset of ${bdf} failed (${detail}); going on: pciback reset it on detach where it could`,
          );
        }
        report.push({ step: 'reset', bdf, domain: 'Domain-0', durationUsec: nowUsec() - s, outcome, detail });
      }
      for (const bdf of attach) {
        await run('attach', bdf, target!, ['pci-attach', String(target!.domid), bdf]);
        done.push(() => run('rollback-detach', bdf, target!, ['pci-detach', String(target!.domid), bdf]));
      }
    } catch (e) {
      const failed = report[report.length - 1];
      const rollbackErrors: string[] = [];
      for (const undo of done.reverse()) {
        try {
          await undo();
        } catch (ue) {
          rollbackErrors.push((ue as Error).message);
        }
      }
      const name = e instanceof BulkheadError && e.errorName === 'Timeout' ? 'Timeout' : 'BackendFailed';
      const where = failed
        ? `${failed.step} ${failed.bdf} ${failed.step === 'attach' ? 'to' : 'from'} ${failed.domain}`
        : 'GPU hand-off';
      const back = detach.length
        ? `; ${detach.map((d) => d.bdf).join(', ')} ${rollbackErrors.length ? 'could NOT be returned' : 'returned'} to ${[...new Set(detach.map((d) => d.dom.name))].join(', ')}`
        : '';
      this.log(report);
      const err: ErrorWithSubSteps = new BulkheadError(
        name,
        `GPU hand-off failed at ${where}: ${(e as Error).message}${back}${rollbackErrors.length ? ` (rollback: ${rollbackErrors.join('; ')})` : ''}`,
      );
      err.substeps = asSubSteps(report);
      throw err;
    }
    this.log(report);
    return { skipped: false, substeps: asSubSteps(report) };
  }

  private log(report: GpuStep[]): void {
    this.opts.log.info(
      `GPU hand-off: ${report.map((r) => `${r.step} ${r.bdf} ${r.domain} ${r.outcome} ${Number(r.durationUsec) / 1000}ms`).join(', ')}`,
    );
  }
}
