/**
 * Input path benchmark. Prints a table and a final `BENCH-JSON {...}` line.
 *  - in-memory sink: events/s and parse→sink.write latency through parser + hotkeys + router;
 *    the same into a VM target with the held-keys journal (a file write + rename before each press
 *    and after each release of a key: the cost of surviving a SIGKILL without stuck keys).
 *  - QMP sink vs a bare client baseline (@bulkhead/qmp's QmpClient alone, pipelining the same
 *    input-send-event commands to the same QMP socket of a real QEMU test guest): frames/s flat
 *    out, and latency p50/p99 from parse to QEMU's reply at a steady 500 frames/s.
 *  - 8 kHz mouse flood into the QMP sink: frames coalesced, longest queue, time to drain.
 * Needs qemu-system-x86_64 and the test guest; without them only the in-memory part runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '@bulkhead/qmp';
import { HeldKeysJournal } from '../held-keys';
import { buildChords, HotkeyMatcher } from '../hotkeys';
import { EV_KEY, EV_REL, InputEventParser, REL_X, REL_Y, encodeEvents, ev, type Frame } from '../input-event';
import { InputPipeline } from '../pipeline';
import { Router } from '../router';
import { qmpConnector } from '../qmp-wiring';
import { QmpSink, frameToQmpEvents } from '../sinks/qmp-sink';
import type { InputSink } from '../sinks/sink';

const REPO = join(__dirname, '..', '..', '..', '..');
const GUEST = join(REPO, 'apps', 'vm-daemon', 'guest', 'build', 'bulkhead-guest.elf');
const quiet = { info: () => undefined, warn: () => undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const nowUs = () => Number(process.hrtime.bigint()) / 1000;

/** parser → hotkeys → router → `sink`, as in the daemon. Returns a feed(bytes) function. */
function pipelineInto(sink: InputSink, journal: HeldKeysJournal | null = null): (bytes: Buffer) => void {
  const router = new Router(sink, { setLeds: () => undefined }, quiet, journal);
  if (journal) {
    journal.setSocket(sink.target, '/bench/input.sock');
    router.setFocus(sink.target, sink);
  }
  const pipeline = new InputPipeline(new HotkeyMatcher(buildChords()), router, () => undefined);
  const parser = new InputEventParser({ frame: (f) => pipeline.handleFrame(f) });
  return (b) => parser.push(b);
}

const keyFrame = (i: number): Frame => [ev(EV_KEY, 30 + (Math.floor(i / 2) % 9), i % 2 === 0 ? 1 : 0)];

function inMemory(journalDir: string | null = null): { eventsPerSec: number; p50us: number; p99us: number } {
  let t0 = 0;
  const lat: number[] = [];
  const sink: InputSink = {
    target: journalDir ? '/org/bulkhead/VmManager1/vm/bench' : '/',
    description: 'memory',
    alive: true,
    write: () => void lat.push(nowUs() - t0),
    close: async () => undefined,
  };
  const feed = pipelineInto(sink, journalDir ? new HeldKeysJournal(journalDir, quiet) : null);
  const frames = Array.from({ length: journalDir ? 20_000 : 100_000 }, (_, i) =>
    encodeEvents(i % 3 ? keyFrame(i) : [ev(EV_REL, REL_X, 1), ev(EV_REL, REL_Y, -1)]),
  );
  const start = nowUs();
  for (const b of frames) {
    t0 = nowUs();
    feed(b);
  }
  const secs = (nowUs() - start) / 1e6;
  const events = frames.reduce((n, b) => n + b.length / 24 - 1, 0);
  return { eventsPerSec: Math.round(events / secs), p50us: pct(lat, 50), p99us: pct(lat, 99) };
}

async function qmpBench(socket: string) {
  const N = 2000;
  const out: Record<string, number> = {};
  // Baseline: the QMP client alone, pipelined commands, no parser/router/sink in front of it.
  const client = await QmpClient.connect(socket, { retryUntilMs: 5000 });
  const sendFrame = (i: number) =>
    client.execute('input-send-event', { events: frameToQmpEvents(keyFrame(i)) }).then(
      () => undefined,
      () => undefined,
    );
  let start = nowUs();
  await Promise.all(Array.from({ length: N }, (_, i) => sendFrame(i)));
  out.clientFramesPerSec = Math.round(N / ((nowUs() - start) / 1e6));
  const clientLat: number[] = [];
  for (let i = 0; i < 500; i++) {
    const t = nowUs();
    void sendFrame(i).then(() => clientLat.push(nowUs() - t));
    await sleep(2);
  }
  await sleep(200);
  await client.close();
  out.clientP50us = Math.round(pct(clientLat, 50));
  out.clientP99us = Math.round(pct(clientLat, 99));
  await sleep(200);

  // The daemon's path: parser → hotkeys → router → QmpSink (the same QmpClient underneath)
  const conn = await qmpConnector({ retryUntilMs: 5000 })(socket);
  const sends: number[] = [];
  const lat: number[] = [];
  const sink = new QmpSink('/org/bulkhead/VmManager1/vm/bench', conn, socket, {
    onWritten: () => {
      const t = sends.shift();
      if (t !== undefined) lat.push(nowUs() - t);
    },
  });
  const feed = pipelineInto(sink);
  start = nowUs();
  for (let i = 0; i < N; i++) feed(encodeEvents(keyFrame(i)));
  await sink.drain();
  out.sinkFramesPerSec = Math.round(N / ((nowUs() - start) / 1e6));
  for (let i = 0; i < 500; i++) {
    sends.push(nowUs());
    feed(encodeEvents(keyFrame(i)));
    await sleep(2);
  }
  await sink.drain();
  out.sinkP50us = Math.round(pct(lat, 50));
  out.sinkP99us = Math.round(pct(lat, 99));

  // 8 kHz mouse flood for 1 s: 8 motion frames every millisecond (as a USB 8 kHz mouse delivers).
  const before = { ...sink.stats };
  const floodStart = nowUs();
  let sent = 0;
  let maxBacklog = 0;
  while (nowUs() - floodStart < 1e6) {
    for (let k = 0; k < 8; k++, sent++) feed(encodeEvents([ev(EV_REL, REL_X, 1), ev(EV_REL, REL_Y, 1)]));
    maxBacklog = Math.max(maxBacklog, sink.backlog);
    await sleep(1);
  }
  const floodEnd = nowUs();
  await sink.drain();
  out.floodFramesIn = sent;
  out.floodCommandsSent = sink.stats.framesOut - before.framesOut;
  out.floodCoalesced = sink.stats.coalesced - before.coalesced;
  out.floodMaxBacklog = maxBacklog; // commands in flight + frames queued
  out.floodDrainMs = Math.round((nowUs() - floodEnd) / 100) / 10;
  await sink.close();
  return out;
}

async function main(): Promise<void> {
  const mem = inMemory();
  // On a tmpfs, as /run is in the Control Domain (on a loaded ext4 a rename costs ~0.15-4 ms).
  const journalDir = mkdtempSync(
    join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'input-bench-journal-'),
  );
  const journaled = inMemory(journalDir);
  rmSync(journalDir, { recursive: true, force: true });
  const result: Record<string, number | string> = {
    memEventsPerSec: mem.eventsPerSec,
    memP50us: Math.round(mem.p50us * 10) / 10,
    memP99us: Math.round(mem.p99us * 10) / 10,
    journalEventsPerSec: journaled.eventsPerSec,
    journalP50us: Math.round(journaled.p50us * 10) / 10,
    journalP99us: Math.round(journaled.p99us * 10) / 10,
  };
  const canQemu = existsSync(GUEST) && spawnSync('qemu-system-x86_64', ['--version']).status === 0;
  let qemu: ChildProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'input-bench-'));
  try {
    if (canQemu) {
      const sock = join(dir, 'input.qmp');
      qemu = spawn(
        'qemu-system-x86_64',
        [
          '-accel',
          'tcg',
          '-m',
          '32',
          '-display',
          'none',
          '-serial',
          'null',
          '-qmp',
          `unix:${sock},server=on,wait=off`,
          '-kernel',
          GUEST,
          '-append',
          'name=bench color=#2a6fdb',
        ],
        { stdio: 'ignore' },
      );
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(50);
      await sleep(500);
      Object.assign(result, await qmpBench(sock));
    } else result.qmp = 'skipped: needs qemu-system-x86_64, the test guest and vm-daemon dist';
  } finally {
    qemu?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  const rows: Array<[string, string]> = [
    ['in-memory sink: events/s', String(result.memEventsPerSec)],
    ['in-memory sink: parse→write p50 / p99 (µs)', `${result.memP50us} / ${result.memP99us}`],
    ['+ held-keys journal (VM target): events/s', String(result.journalEventsPerSec)],
    ['+ held-keys journal: parse→write p50 / p99 (µs)', `${result.journalP50us} / ${result.journalP99us}`],
  ];
  if (canQemu) {
    rows.push(
      ['QmpClient alone: frames/s (flat out)', String(result.clientFramesPerSec)],
      ['QMP sink: frames/s (flat out)', String(result.sinkFramesPerSec)],
      [
        'QmpClient alone: write→reply p50 / p99 (µs) @500 Hz',
        `${result.clientP50us} / ${result.clientP99us}`,
      ],
      ['QMP sink: parse→reply p50 / p99 (µs) @500 Hz', `${result.sinkP50us} / ${result.sinkP99us}`],
      ['8 kHz flood: frames in / QMP commands', `${result.floodFramesIn} / ${result.floodCommandsSent}`],
      [
        '8 kHz flood: coalesced / max backlog / drain ms',
        `${result.floodCoalesced} / ${result.floodMaxBacklog} / ${result.floodDrainMs}`,
      ],
    );
  } else rows.push(['QMP', String(result.qmp)]);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  console.log(`BENCH-JSON ${JSON.stringify({ bench: 'input-daemon', ...result })}`);
}

main().catch((e) => {
  console.error(`input bench failed: ${(e as Error).stack}`);
  process.exit(1);
});
