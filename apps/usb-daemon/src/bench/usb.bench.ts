/**
 * usb-daemon benchmark: policy decisions per second against a 200-rule file, and the
 * Assign/Release round trip over a private bus through FakeVmManager (usb-daemon's own overhead:
 * D-Bus calls to the VM and property updates, not QEMU's device_add).
 * Prints a table and a final line `BENCH-JSON {...}`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUS_NAMES, usbDevicePath, vmPath } from '@bulkhead/contract';
import { createLogger } from '@bulkhead/common';
import { BusClient, ServiceHost, connectBus, startPrivateBus } from '@bulkhead/dbus';
import { deviceId } from '../device';
import { decideNewDevice, parseRules, policyDeviceOf } from '../policy';
import { UsbService } from '../usb-service';
import { DbusVmControl } from '../vm-directory';
import { FakeUsbEnumerator, fakeDevice } from '../testing/fake-usb-enumerator';
import { FakeVmManager } from '../testing/fake-vm-manager';

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function main(): Promise<void> {
  // 1. Policy engine.
  const rules = parseRules(
    JSON.stringify({
      rules: Array.from({ length: 200 }, (_, i) => ({
        match: { vid: (0x1000 + i).toString(16), pid: '0001' },
        action: 'deny',
      })),
    }),
  );
  const dev = policyDeviceOf(fakeDevice({ address: 3 }));
  const ctx = { focusedVm: 'work', vms: new Map([['work', { running: true, usbAutoAttach: true }]]) };
  const n = 20_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) decideNewDevice(dev, rules, ctx);
  const policyUs = Number(process.hrtime.bigint() - t0) / 1000 / n;

  // 2. Assign/Release round trip.
  const dir = mkdtempSync(join(tmpdir(), 'usb-bench-'));
  const bus = await startPrivateBus({ mode: 'open' });
  const stick = fakeDevice({ address: 4 });
  const conns = await Promise.all([
    connectBus(bus.address),
    connectBus(bus.address),
    connectBus(bus.address),
  ]);
  const vms = new FakeVmManager(conns[0]);
  await vms.start();
  vms.addVm('work');
  const host = new ServiceHost(conns[1], { log: () => undefined });
  const log = createLogger('usb-bench', 'error');
  const service = new UsbService({
    host,
    enumerator: new FakeUsbEnumerator([stick]),
    vms: new DbusVmControl(new BusClient(conns[1]), log),
    log,
    rulesFile: join(dir, 'rules.json'),
    stateDir: dir,
  });
  await service.start();
  await host.requestName(BUS_NAMES.usb);
  const proxy = new BusClient(conns[2]).proxy(
    BUS_NAMES.usb,
    usbDevicePath(deviceId(stick)),
    'org.bulkhead.UsbDevice1',
  );
  const assignMs: number[] = [];
  const releaseMs: number[] = [];
  for (let i = 0; i < 100; i++) {
    let t = performance.now();
    await proxy.Assign(vmPath('work'), {});
    assignMs.push(performance.now() - t);
    t = performance.now();
    await proxy.Release();
    releaseMs.push(performance.now() - t);
  }
  await service.stop();
  host.close();
  vms.close();
  conns.forEach((c) => c.disconnect());
  await bus.stop();
  rmSync(dir, { recursive: true, force: true });

  const result = {
    policy_decision_us_200_rules: +policyUs.toFixed(2),
    assign_ms_p50: +percentile(assignMs, 50).toFixed(2),
    assign_ms_p95: +percentile(assignMs, 95).toFixed(2),
    release_ms_p50: +percentile(releaseMs, 50).toFixed(2),
    release_ms_p95: +percentile(releaseMs, 95).toFixed(2),
  };
  console.log('usb-daemon benchmark');
  console.log('metric                              value');
  for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(36)}${v}`);
  console.log(`BENCH-JSON ${JSON.stringify({ name: 'usb-daemon', ...result })}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
