/**
 * The suspend transaction's view of vm-daemon: the VMs and switch of the manager, the seat of
 * input-daemon (Input1.Lock), sleeping through logind.
 */
import { BUS_NAMES, INPUT_PATH } from '@bulkhead/contract';
import type { VmManager } from '../vm-manager';
import type { BusClient, LogindClient, SleepKind } from '@bulkhead/dbus';
import type { SuspendHost } from './suspend-transaction';

export class ManagerSuspendHost implements SuspendHost {
  constructor(
    private readonly manager: VmManager,
    private readonly client: BusClient,
    private readonly logind: LogindClient,
  ) {}

  async lockSeat(): Promise<void> {
    // No input-daemon means no lock screen after waking: the suspend fails here, before any VM
    // is touched, rather than resuming to an unlocked seat.
    await this.client.call(BUS_NAMES.input, INPUT_PATH, 'org.bulkhead.Input1', 'Lock', '', [], {
      timeoutMs: 5000,
    });
  }

  switchInProgress(): boolean {
    return this.manager.transaction.inProgress;
  }

  waitSwitchIdle(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.manager.transaction.inProgress) return resolve();
      const onChange = (): void => {
        if (this.manager.transaction.inProgress) return;
        this.manager.off('manager-changed', onChange);
        resolve();
      };
      this.manager.on('manager-changed', onChange);
    });
  }

  runningVms(): string[] {
    return [...this.manager.vms].filter(([, e]) => e.state === 'running').map(([id]) => id);
  }

  pauseVm(id: string): Promise<void> {
    // The active VM stays active while it sleeps: the seat is locked, and after waking and
    // unlocking the person is back where they were.
    return this.manager.pause(id, { forSleep: true });
  }

  resumeVm(id: string): Promise<void> {
    return this.manager.resume(id);
  }

  vmState(id: string): string | null {
    return this.manager.vms.get(id)?.state ?? null;
  }

  sleep(kind: SleepKind): Promise<void> {
    return this.logind.sleep(kind);
  }
}
