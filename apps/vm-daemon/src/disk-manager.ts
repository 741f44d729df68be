/**
 * Disks a person makes: a new empty image of a given size, or an import of an image file they
 * picked (from a USB stick mounted read-only by the Control Domain) converted with qemu-img.
 *
 * An import is a job: it reports progress (0-100) while qemu-img converts, can be cancelled, and
 * writes into a hidden temporary name next to the target that is renamed only once qemu-img has
 * finished; a cancelled or failed import removes the temporary file, so no half-written disk is
 * ever left under the name a VM file points to.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, readSync, rmSync, renameSync, statfsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { BulkheadError } from '@bulkhead/contract';
import { TypedEmitter, openReadOnlyNoWait } from '@bulkhead/common';
import type { DiskFormat } from './config';

/** Formats an import may come in, as qemu-img names them ('vpc' is VHD). */
export const IMPORT_FORMATS: readonly string[] = ['qcow2', 'vpc', 'vhdx', 'raw'];

/** Bytes free for an unprivileged writer in the filesystem holding `dir`. */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * Refuse a size the filesystem cannot hold: qcow2 is sparse, but a disk that the guest fills
 * beyond the free space would fail writes inside the VM at some later, surprising moment.
 */
export function checkFreeSpace(field: string, dir: string, bytes: number): void {
  const free = freeBytes(dir);
  if (bytes > free)
    throw new BulkheadError(
      'InvalidArgument',
      `${field}: ${Math.ceil(bytes / 1048576)} MiB is more than the ${Math.floor(free / 1048576)} MiB free in ${dir}`,
    );
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const words = (stderr || err.message).trim().split('\n').pop();
        reject(new BulkheadError('BackendFailed', `${cmd} ${args[0]} failed: ${words}`));
      } else resolve(stdout);
    });
  });
}

/** A new, empty disk image (qcow2 by default). */
export async function createDisk(path: string, format: DiskFormat, sizeMiB: number): Promise<void> {
  if (existsSync(path))
    throw new BulkheadError('InvalidArgument', `disk: ${path} already exists; not overwriting it`);
  await run('qemu-img', ['create', '-q', '-f', format, path, `${sizeMiB}M`]);
}

export interface SourceImage {
  format: string;
  virtualSize: number;
}

/** qcow2's header flag (incompatible feature bit 2) for guest data kept in another file. */
const QCOW2_EXTERNAL_DATA_FILE = 4n;

/**
 * The source's own bytes, before any qemu-img opens it: a regular file (a FIFO on an ext4 stick
 * would hold qemu-img; a device node is refused by the nodev mount, and here too), and, for a
 * qcow2, no reference to another file in its header: neither a backing file nor an external data
 * file (`data_file`), which qemu-img would open, as root, when it merely opens the image.
 */
function checkSourceFile(path: string): void {
  const name = basename(path);
  let fd: number;
  try {
    fd = openReadOnlyNoWait(path);
  } catch (e) {
    throw new BulkheadError(
      'InvalidArgument',
      `disk_import: cannot open ${name}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  try {
    if (!fstatSync(fd).isFile())
      throw new BulkheadError('InvalidArgument', `disk_import: ${name} is not a regular file`);
    const h = Buffer.alloc(104);
    const n = readSync(fd, h, 0, h.length, 0);
    if (n < 4 || h.readUInt32BE(0) !== 0x514649fb) return; // not a qcow2 ("QFI\xfb")
    if (n >= 16 && h.readBigUInt64BE(8) !== 0n)
      throw new BulkheadError(
        'InvalidArgument',
        `disk_import: ${name} has a backing file; only self-contained images can be imported`,
      );
    if (n >= 80 && h.readUInt32BE(4) >= 3 && (h.readBigUInt64BE(72) & QCOW2_EXTERNAL_DATA_FILE) !== 0n)
      throw new BulkheadError(
        'InvalidArgument',
        `disk_import: ${name} keeps its data in another file (qcow2 data_file); only self-contained images can be imported`,
      );
  } finally {
    closeSync(fd);
  }
}

/**
 * What an import source is, by qemu-img. An image that names another file is refused: converting
 * it would read that file, which the image's author names (a qcow2 on a stick whose backing file
 * or data file is /etc/shadow, or the laptop's disk, would copy it into their VM). Checked in the
 * file's header before qemu-img opens it (checkSourceFile) and again in what qemu-img reports.
 */
export async function inspectSource(path: string): Promise<SourceImage> {
  checkSourceFile(path);
  const out = await run('qemu-img', ['info', '--output=json', '-U', path]);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(out) as Record<string, unknown>;
  } catch {
    throw new BulkheadError('BackendFailed', `qemu-img info ${path}: output is not JSON`);
  }
  const format = String(j.format);
  if (!IMPORT_FORMATS.includes(format))
    throw new BulkheadError(
      'InvalidArgument',
      `disk_import: ${basename(path)} is ${format}, not one of ${IMPORT_FORMATS.join(', ')} (vpc = VHD)`,
    );
  if (j['backing-filename'] !== undefined || j['full-backing-filename'] !== undefined)
    throw new BulkheadError(
      'InvalidArgument',
      `disk_import: ${basename(path)} has a backing file; only self-contained images can be imported`,
    );
  const specific = (j['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data;
  if (specific && specific['data-file'] !== undefined)
    throw new BulkheadError(
      'InvalidArgument',
      `disk_import: ${basename(path)} keeps its data in another file (qcow2 data_file); only self-contained images can be imported`,
    );
  return { format, virtualSize: Number(j['virtual-size']) };
}

export interface ImportEvents {
  progress: [percent: number];
}

/** One running import: `done` settles when it finished, failed or was cancelled. */
/**
 * The hidden name qemu-img writes an import of `target` to, next to it; renamed to `target` only
 * once qemu-img has finished (DiskImport). The one place that knows the name.
 */
export function importTempPath(target: string): string {
  return join(dirname(target), `.${basename(target)}.importing`);
}

/** The disk an import's temporary output at `path` was for (importTempPath's inverse), or null. */
export function importTargetOf(path: string): string | null {
  const m = /^\.(.+)\.importing$/.exec(basename(path));
  return m ? join(dirname(path), m[1]) : null;
}

export class DiskImport extends TypedEmitter<ImportEvents> {
  percent = 0;
  private child: ChildProcess | null = null;
  private cancelled = false;
  readonly done: Promise<void>;
  /** The hidden name qemu-img writes to; renamed to `target` only on success. */
  readonly tempPath: string;

  constructor(
    readonly source: string,
    readonly sourceFormat: string,
    readonly target: string,
    readonly targetFormat: DiskFormat,
  ) {
    super();
    this.tempPath = importTempPath(target);
    this.done = this.run();
    // The caller may only look at `percent` and never await `done`: no unhandled rejection.
    this.done.catch(() => undefined);
  }

  private async run(): Promise<void> {
    if (existsSync(this.target))
      throw new BulkheadError('InvalidArgument', `disk: ${this.target} already exists; not overwriting it`);
    rmSync(this.tempPath, { force: true });
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(
          'qemu-img',
          ['convert', '-p', '-f', this.sourceFormat, '-O', this.targetFormat, this.source, this.tempPath],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        this.child = child;
        let err = '';
        let out = '';
        child.stdout!.setEncoding('utf8');
        child.stdout!.on('data', (d: string) => {
          // qemu-img -p rewrites one line with '\r': "    (12.34/100%)".
          out = (out + d).slice(-200);
          const all = [...out.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
          const last = all.at(-1);
          if (last) {
            const p = Math.min(100, Math.floor(Number(last[1])));
            if (p !== this.percent) {
              this.percent = p;
              this.emit('progress', p);
            }
          }
        });
        child.stderr!.setEncoding('utf8');
        child.stderr!.on('data', (d: string) => (err = (err + d).slice(-2000)));
        child.on('error', (e) =>
          reject(new BulkheadError('BackendFailed', `cannot run qemu-img: ${e.message}`)),
        );
        child.on('exit', (code, sig) => {
          if (this.cancelled)
            reject(new BulkheadError('Cancelled', `import of ${basename(this.source)} cancelled`));
          else if (code === 0) resolve();
          else
            reject(
              new BulkheadError(
                'BackendFailed',
                `qemu-img convert failed (${sig ? `signal ${sig}` : `code ${code}`}): ${err.trim().split('\n').pop() ?? ''}`,
              ),
            );
        });
      });
      renameSync(this.tempPath, this.target);
      if (this.percent !== 100) {
        this.percent = 100;
        this.emit('progress', 100);
      }
    } catch (e) {
      rmSync(this.tempPath, { force: true });
      throw e;
    } finally {
      this.child = null;
    }
  }

  /** Stop the conversion; `done` rejects with Cancelled once the temporary file is removed. */
  cancel(): void {
    this.cancelled = true;
    this.child?.kill('SIGKILL');
  }
}
