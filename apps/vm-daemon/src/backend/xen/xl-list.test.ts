import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BulkheadError } from '@bulkhead/contract';
import { parseXlListJson } from './xl-list';
import { xlListJson } from '../../testing/xl-fixtures';
import { xlMessage } from './xl-runner';

test('xl list -l: domids, names, types, PCI functions and USB devices', () => {
  const doms = parseXlListJson(
    xlListJson([
      { domid: 3, name: 'personal', pci: ['0000:00:03.0'] },
      {
        domid: 7,
        name: 'work',
        type: 'hvm',
        usbctrl: true,
        usbdevs: [{ ctrl: 0, port: 1, hostbus: 3, hostaddr: 2 }],
      },
    ]),
  );
  assert.deepEqual(
    doms.map((d) => [d.domid, d.name, d.type]),
    [
      [0, 'Domain-0', 'pv'],
      [3, 'personal', 'pv'],
      [7, 'work', 'hvm'],
    ],
  );
  assert.deepEqual(doms[1].pci, ['0000:00:03.0']);
  assert.deepEqual(doms[2].usbdevs, [{ ctrl: 0, port: 1, hostbus: 3, hostaddr: 2 }]);
  assert.equal(doms[2].usbctrls[0].type, 'devicemodel');
});

test('xl list -l: older flat PCI layout and hex formatting', () => {
  const text = JSON.stringify([
    {
      domid: 2,
      config: { c_info: { name: 'a', type: 'pv' }, pcidevs: [{ domain: 0, bus: 0x1a, dev: 0x1f, func: 3 }] },
    },
  ]);
  assert.deepEqual(parseXlListJson(text)[0].pci, ['0000:1a:1f.3']);
});

test('xl list -l: garbage and malformed entries give BackendFailed naming the entry and field', () => {
  const check = (text: string, re: RegExp) =>
    assert.throws(
      () => parseXlListJson(text),
      (e: BulkheadError) => e.errorName === 'BackendFailed' && re.test(e.message),
    );
  check('libxl: error: cannot connect', /xl list -l: output is not JSON/);
  check('[{"domid":"x","config":{}}]', /entry 0: domid is not a domain id/);
  check('[{"domid":1,"config":{"c_info":{}}}]', /entry 0: config\.c_info\.name is missing/);
  check('[{"domid":1,"config":{"c_info":{"name":"a"},"pcidevs":{}}}]', /config\.pcidevs is not an array/);
  check(
    '[{"domid":1,"config":{"c_info":{"name":"a"},"pcidevs":[{"bdf":{"bus":-1}}]}}]',
    /pcidevs\[0\]\.bus is not a non-negative integer/,
  );
});

test("xl's message: libxl errors are kept, noise dropped", () => {
  const stderr =
    'Parsing config from /run/x.cfg\nlibxl: debug: foo\nlibxl: error: libxl_pci.c:1489:pci_add_dm_done: Domain 4:xc_assign_device failed: Operation not supported\nlibxl: error: libxl_pci.c:1797:device_pci_add_done: Domain 4:libxl__device_pci_add failed for PCI device 0:0:3.0 (rc -3)\n';
  const m = xlMessage(stderr);
  assert.match(m, /xc_assign_device failed: Operation not supported/);
  assert.match(m, /rc -3/);
  assert.doesNotMatch(m, /Parsing config|debug/);
  assert.equal(xlMessage(''), '(xl printed nothing)');
});
