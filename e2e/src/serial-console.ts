import { connect, type Socket } from 'node:net';

/** The console went silent before its shell came: see SerialConsole.waitForShell. */
export class ConsoleSilentError extends Error {
  override name = 'ConsoleSilentError';
}

/**
 * The image's root shell on its serial port (autologin on ttyS0, test image only): runs one
 * command at a time and returns its output and exit code. Used to read what only the inside can
 * show (nested VMs' serial logs, journal, systemctl) — never to drive the product, which the
 * tests drive from outside like a person (keys and mouse via QMP, the UI via CDP).
 */
export class SerialConsole {
  private buf = '';
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * Type each command in pieces of at most this many bytes, with a pause after each (0: all at
   * once). The Xen entry needs it (ImageMachine sets it): dom0's hvc0 input comes through Xen's
   * serial receive ring (128 bytes), which a busy dom0 drains late; a whole command (~140 bytes)
   * at once lost its tail there under load ('-bash: o: command not found', then every later
   * command waited on a half-typed line).
   */
  typingChunk = 0;
  /** When the console last printed anything (Date.now()); connecting counts as the start. */
  lastOutputAt = Date.now();
  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.lastOutputAt = Date.now();
      this.buf += d;
      if (this.buf.length > 4_000_000) this.buf = this.buf.slice(-1_000_000);
    });
  }

  static async connect(path: string, timeoutMs = 30_000): Promise<SerialConsole> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        return new SerialConsole(sock);
      } catch (e) {
        if (Date.now() > end) throw new Error(`serial console ${path}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * Wait until the console shows a shell prompt (the autologin finished). With `silentMs`, gives up early with a ConsoleSilentError once the console has printed nothing
   * at all for that long (not even the echo of what this types): a boot that hung.
   */
  async waitForShell(timeoutMs: number, opts: { silentMs?: number } = {}): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      try {
        await this.run('true', { timeoutMs: Math.min(5000, Math.max(100, end - Date.now())) });
        return;
      } catch {
        const silent = Date.now() - this.lastOutputAt;
        if (opts.silentMs !== undefined && silent >= opts.silentMs)
          throw new ConsoleSilentError(
            `the serial console printed nothing for ${Math.round(silent / 1000)} s (no shell yet); its last line: ${JSON.stringify(this.buf.trimEnd().split('\n').pop()?.slice(-200) ?? '')}`,
          );
        this.sock.write('\n');
      }
    }
    throw new Error(`no shell on the serial console within ${timeoutMs} ms`);
  }

  /** Everything the console printed so far (kept to the last ~1 MB). */
  get output(): string {
    return this.buf;
  }

  /** Sends raw text, as typed at the console (e.g. answers to a login prompt). */
  send(text: string): void {
    this.sock.write(text);
  }

  /** Waits until what the console printed after `from` (an index into output) matches `re`. */
  async waitForOutput(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf.slice(from));
      if (m) return m;
      if (Date.now() > end)
        throw new Error(
          `the serial console did not print ${re} within ${timeoutMs} ms; last: ${JSON.stringify(this.buf.slice(-300))}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  run(command: string, opts: { timeoutMs?: number } = {}): Promise<{ code: number; output: string }> {
    const job = this.queue.then(() => this.runNow(command, opts.timeoutMs ?? 60_000));
    this.queue = job.catch(() => undefined);
    return job;
  }

  /** Run and fail unless the exit code is 0. */
  async check(command: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(command, opts);
    if (r.code !== 0)
      throw new Error(`in the image: '${command}' exited ${r.code}: ${r.output.slice(-2000)}`);
    return r.output;
  }

  private async runNow(command: string, timeoutMs: number): Promise<{ code: number; output: string }> {
    const tag = `M${Math.random().toString(36).slice(2, 10)}`;
    // \r*: Xen's console (hvc0) ends a line with \r\r\n.
    const re = new RegExp(`B${tag}\\r*\\n([\\s\\S]*?)E${tag}:(\\d+)`);
    const start = this.buf.length;
    const line = `stty -echo cols 500 2>/dev/null; echo B${tag}; ${command}; echo E${tag}:$?\n`;
    if (this.typingChunk > 0)
      for (let i = 0; i < line.length; i += this.typingChunk) {
        this.sock.write(line.slice(i, i + this.typingChunk));
        await new Promise((r) => setTimeout(r, 40));
      }
    else this.sock.write(line);
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const m = re.exec(this.buf.slice(Math.max(0, start - 100)));
      if (m) return { code: Number(m[2]), output: withoutXenLines(m[1]).replace(/\r/g, '') };
      await new Promise((r) => setTimeout(r, 50));
    }
    // A line typed only in part (input lost) would swallow the next command: Ctrl+C clears it.
    if (this.typingChunk > 0) this.sock.write('\x03\n');
    throw new Error(`in the image: '${command}' did not finish within ${timeoutMs} ms`);
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * A command's output (raw, before its \r are removed) without the hypervisor's own lines. On the
 * Xen entry Xen prints on the same serial port as dom0's console (hvc0), a whole line at a time,
 * prefixed `(XEN) `: a guest's triple fault dumps ~15 such lines, which once landed in the middle of
 * a busctl answer and were taken for its value. Xen's serial driver ends each line it prints with
 * \r\n; dom0's output has one \r more (its tty's \r\n, then Xen's for the \n), so a command that
 * prints Xen's lines itself (`xl dmesg`) keeps them.
 */
export function withoutXenLines(raw: string): string {
  return raw
    .split('\n')
    .filter((l) => !(l.startsWith('(XEN) ') && l.endsWith('\r') && !l.endsWith('\r\r')))
    .join('\n');
}
