/**
 * THE channel map between the switcher's main process (Electron main or the web host) and its
 * renderer. Both transports (Electron IPC through the preload bridge, and the web host's
 * WebSocket) carry exactly these requests and pushes; anything else is rejected on both sides.
 */
import type { DaemonName, DaemonStatus, PromptModel, SwitcherSnapshot, VmModel } from './model';

export type EvdevEvent = [type: number, code: number, value: number];

/**
 * What the New-machine dialog and a machine's settings send (VmManager1.CreateVm, Vm1.Update).
 * Shapes only are checked here; vm-daemon validates the values and names the bad option.
 */
export interface MachineOptions {
  slot?: number;
  color?: string;
  memoryMiB?: number;
  vcpus?: number;
  network?: string;
  usbAutoAttach?: boolean;
  /** A new empty disk of this size (MiB). */
  diskSizeMiB?: number;
  diskFormat?: string;
  /** An image file to convert into the disk (under a media root: a USB stick). */
  diskImport?: string;
  /** An ISO to install from; '' in settings ejects it. */
  cdrom?: string;
  /** Settings only: a new name. */
  name?: string;
}
export type InputDeviceClass = 'keyboard' | 'mouse' | 'tablet';

export interface RequestMap {
  getSnapshot: { args: Record<string, never>; result: SwitcherSnapshot };
  switchTo: { args: { vm: string }; result: null };
  startVm: { args: { vm: string }; result: null };
  stopVm: { args: { vm: string }; result: null };
  assignUsb: { args: { device: string; vm: string }; result: null };
  releaseUsb: { args: { device: string }; result: null };
  setSticky: { args: { device: string; sticky: boolean }; result: null };
  setFollowFocus: { args: { device: string; follow: boolean }; result: null };
  answerPrompt: { args: { promptId: number; answer: 'allow' | 'deny' }; result: null };
  lock: { args: Record<string, never>; result: null };
  /** Power1.Suspend: the machine sleeps with its VMs; progress and failures come as Power1 state. */
  suspend: { args: Record<string, never>; result: null };
  /** The password as typed; input-daemon checks it (PAM). Never logged, never kept. */
  unlock: { args: { password: string }; result: null };
  injectInput: { args: { deviceClass: InputDeviceClass; events: EvdevEvent[] }; result: null };
  /** The renderer tells whether tiles are on screen, so thumbnails are only taken when seen. */
  setThumbnailsVisible: { args: { visible: boolean }; result: null };
  /** Where the renderer's noVNC connects for a VM's display (a ws: URL), or '' when none. */
  vncUrl: { args: { vm: string }; result: { url: string } };
  /** VmManager1.CreateVm: a machine the person owns; the result is its object path. */
  createVm: { args: { name: string; options: MachineOptions }; result: { vm: string } };
  /** Vm1.Update of a stopped machine the person owns. */
  updateVm: { args: { vm: string; options: MachineOptions }; result: null };
  /** Vm1.Delete, with or without its disks. */
  deleteVm: { args: { vm: string; removeDisks: boolean }; result: null };
  /** Vm1.Eject: remove the installation medium (at once from a running machine). */
  ejectVm: { args: { vm: string }; result: null };
  /** Vm1.CancelDiskJob: stop a disk import (the machine made for it goes too). */
  cancelDiskJob: { args: { vm: string }; result: null };
  /**
   * The renderer's own timing of a change of the view on screen (a VM's or the tiles, '/'), for
   * the journal (issue 17: where hotkey to picture goes): when the push that caused it arrived
   * (its channel), when the DOM had it, and the start of the second animation frame after that
   * (the first frame with it was handed to the compositor). Date.now() values, milliseconds.
   */
  reportView: { args: ViewTiming; result: null };
}

export interface ViewTiming {
  view: string;
  channel: string;
  pushAt: number;
  domAt: number;
  frameAt: number;
}

export interface PushMap {
  snapshot: SwitcherSnapshot;
  vmPatch: { path: string; patch: Partial<VmModel> };
  daemon: { name: DaemonName; status: DaemonStatus };
  switchProgress: { target: string; step: string; detail: string; at: number };
  secureAttention: { at: number };
  prompt: PromptModel;
  thumbnail: { vm: string; png: string; at: number };
  hotkey: { chord: string; action: string };
  usbRejected: { device: string; reason: string };
}

export type RequestChannel = keyof RequestMap;
export type PushChannel = keyof PushMap;
export type RequestArgs<C extends RequestChannel> = RequestMap[C]['args'];
export type RequestResult<C extends RequestChannel> = RequestMap[C]['result'];

/** A failed request as the renderer sees it: the D-Bus error's short name and its message. */
export interface RequestFailure {
  name: string;
  message: string;
}
export type RequestOutcome<T> = { ok: true; result: T } | { ok: false; error: RequestFailure };

/** The web host's WebSocket frames. */
export type ClientFrame = { id: number; channel: string; args: unknown };
export type ServerFrame =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: RequestFailure }
  | { push: PushChannel; payload: unknown };

export class ChannelError extends Error {
  constructor(
    readonly errorName: string,
    message: string,
  ) {
    super(message);
  }
}

type Check = (v: unknown) => boolean;
const objPath: Check = (v) => typeof v === 'string' && /^\/([A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*)?$/.test(v);
const bool: Check = (v) => typeof v === 'boolean';
const u32: Check = (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
/** Longest unlock password carried, in bytes of UTF-8: input-daemon's own limit (PAM's is 512). */
export const MAX_UNLOCK_PASSWORD_BYTES = 512;
const password: Check = (v) =>
  typeof v === 'string' && new TextEncoder().encode(v).length <= MAX_UNLOCK_PASSWORD_BYTES;
/** Text a person types into a form: bounded, so a hostile renderer cannot send megabytes. */
const epochMs: Check = (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 2 ** 53;
const text =
  (max: number): Check =>
  (v) =>
    typeof v === 'string' && v.length <= max;
const MACHINE_OPTION_CHECKS: Record<keyof MachineOptions, Check> = {
  slot: u32,
  color: text(16),
  memoryMiB: u32,
  vcpus: u32,
  network: text(32),
  usbAutoAttach: bool,
  diskSizeMiB: u32,
  diskFormat: text(16),
  diskImport: text(1024),
  cdrom: text(1024),
  name: text(256),
};
const machineOptions: Check = (v) =>
  !!v &&
  typeof v === 'object' &&
  !Array.isArray(v) &&
  Object.entries(v).every(
    ([k, x]) =>
      Object.prototype.hasOwnProperty.call(MACHINE_OPTION_CHECKS, k) &&
      MACHINE_OPTION_CHECKS[k as keyof MachineOptions](x),
  );
const oneOf =
  (...xs: string[]): Check =>
  (v) =>
    typeof v === 'string' && xs.includes(v);
const events: Check = (v) =>
  Array.isArray(v) &&
  v.length <= 256 &&
  v.every(
    (e) =>
      Array.isArray(e) &&
      e.length === 3 &&
      Number.isInteger(e[0]) &&
      e[0] >= 0 &&
      e[0] <= 0xffff &&
      Number.isInteger(e[1]) &&
      e[1] >= 0 &&
      e[1] <= 0xffff &&
      Number.isInteger(e[2]) &&
      e[2] >= -0x80000000 &&
      e[2] <= 0x7fffffff,
  );

/** Argument shape of every request: the one place both transports validate against. */
const REQUEST_SCHEMA: { [C in RequestChannel]: Record<keyof RequestArgs<C>, Check> } = {
  getSnapshot: {},
  switchTo: { vm: objPath },
  startVm: { vm: objPath },
  stopVm: { vm: objPath },
  assignUsb: { device: objPath, vm: objPath },
  releaseUsb: { device: objPath },
  setSticky: { device: objPath, sticky: bool },
  setFollowFocus: { device: objPath, follow: bool },
  answerPrompt: { promptId: u32, answer: oneOf('allow', 'deny') },
  lock: {},
  suspend: {},
  unlock: { password },
  injectInput: { deviceClass: oneOf('keyboard', 'mouse', 'tablet'), events },
  setThumbnailsVisible: { visible: bool },
  vncUrl: { vm: objPath },
  createVm: { name: text(256), options: machineOptions },
  updateVm: { vm: objPath, options: machineOptions },
  deleteVm: { vm: objPath, removeDisks: bool },
  cancelDiskJob: { vm: objPath },
  ejectVm: { vm: objPath },
  reportView: { view: objPath, channel: text(32), pushAt: epochMs, domAt: epochMs, frameAt: epochMs },
};

export const REQUEST_CHANNELS = Object.keys(REQUEST_SCHEMA) as RequestChannel[];
export const PUSH_CHANNELS: readonly PushChannel[] = [
  'snapshot',
  'vmPatch',
  'daemon',
  'switchProgress',
  'secureAttention',
  'prompt',
  'thumbnail',
  'hotkey',
  'usbRejected',
];

export const isRequestChannel = (c: unknown): c is RequestChannel =>
  typeof c === 'string' && Object.prototype.hasOwnProperty.call(REQUEST_SCHEMA, c);
export const isPushChannel = (c: unknown): c is PushChannel =>
  typeof c === 'string' && (PUSH_CHANNELS as readonly string[]).includes(c);

/**
 * Checks a request coming from the renderer (never trusted: in the web host it comes from a
 * socket). Throws ChannelError naming the channel and the bad field.
 */
export function validateRequest(
  channel: unknown,
  args: unknown,
): { channel: RequestChannel; args: RequestArgs<RequestChannel> } {
  if (!isRequestChannel(channel))
    throw new ChannelError('UnknownChannel', `unknown channel '${String(channel)}'`);
  const schema = REQUEST_SCHEMA[channel] as Record<string, Check>;
  const a = (args ?? {}) as Record<string, unknown>;
  if (typeof a !== 'object' || Array.isArray(a))
    throw new ChannelError('InvalidArgument', `${channel}: arguments must be an object`);
  for (const k of Object.keys(a))
    if (!(k in schema)) throw new ChannelError('InvalidArgument', `${channel}: unknown argument '${k}'`);
  for (const [k, check] of Object.entries(schema))
    if (!check(a[k]))
      throw new ChannelError('InvalidArgument', `${channel}: argument '${k}' is missing or invalid`);
  return { channel, args: a as RequestArgs<RequestChannel> };
}
