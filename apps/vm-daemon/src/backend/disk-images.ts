import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BulkheadError } from '@bulkhead/contract';
import type { DiskDefinition } from '../config';

export interface DiskInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
}

function qemuImg(args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('qemu-img', args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const words = (stderr || err.message).trim().split('\n').pop();
        reject(new BulkheadError('BackendFailed', `qemu-img ${args[0]} failed: ${words}`));
      } else resolve(stdout);
    });
  });
}

/** Create a disk image with qemu-img (qcow2, raw, vpc = VHD, vhdx). */
export async function createDiskImage(path: string, format: string, sizeMiB: number): Promise<void> {
  await qemuImg(['create', '-q', '-f', format, path, `${sizeMiB}M`]);
}

/** What qemu-img says about an image (it detects the format from the content). */
export async function inspectDiskImage(path: string): Promise<DiskInfo> {
  const out = await qemuImg(['info', '--output=json', '-U', path]);
  let j: { format?: unknown; 'virtual-size'?: unknown; 'actual-size'?: unknown };
  try {
    j = JSON.parse(out);
  } catch {
    throw new BulkheadError('BackendFailed', `qemu-img info ${path}: output is not JSON`);
  }
  return {
    format: String(j.format),
    virtualSize: Number(j['virtual-size']),
    actualSize: Number(j['actual-size'] ?? 0),
  };
}

/**
 * Make sure each disk exists and really has its declared format (a VHD declared as qcow2 would
 * be read as garbage, or worse, a raw file probed as qcow2 is a known attack). Missing images
 * with sizeMiB are created.
 */
export async function prepareDisks(file: string, disks: DiskDefinition[]): Promise<void> {
  for (const [i, d] of disks.entries()) {
    if (!existsSync(d.path)) {
      if (d.sizeMiB === null)
        throw new BulkheadError(
          'InvalidConfig',
          `${file}: disks[${i}].path: ${d.path} does not exist (set sizeMiB to create it)`,
        );
      await createDiskImage(d.path, d.format, d.sizeMiB);
    }
    const info = await inspectDiskImage(d.path);
    // qemu-img reports raw for any file it cannot recognise, so raw accepts whatever it says is raw.
    if (info.format !== d.format)
      throw new BulkheadError(
        'InvalidConfig',
        `${file}: disks[${i}].format: declared ${d.format}, but qemu-img finds ${info.format} in ${d.path}`,
      );
  }
}
