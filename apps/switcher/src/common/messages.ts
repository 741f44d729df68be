/** Human wording for errors and switch steps, shared by renderer and tests. */
import type { SwitchProgressStep } from '@bulkhead/common';
import type { RequestFailure } from './channels';

export interface HumanError {
  title: string;
  message: string;
  /** The daemon's own words, shown smaller. */
  detail: string;
}

const TITLES: Record<string, string> = {
  NoSuchVm: 'That virtual machine no longer exists',
  NoSuchDevice: 'That USB device is gone',
  InvalidState: 'Not possible right now',
  InvalidConfig: 'The VM definition is invalid',
  Unavailable: 'Not available on this boot entry',
  SwitchInProgress: 'Another switch is still running',
  Superseded: 'A newer switch request replaced this one',
  Locked: 'The screen is locked',
  PolicyDenied: 'The USB policy does not allow this',
  AccessDenied: 'Not allowed',
  BackendFailed: 'The hypervisor reported a failure',
  InvalidArgument: 'The request was not understood',
  Timeout: 'It took too long',
  NotSupported: 'Not supported here',
  Failed: 'Something went wrong',
  ServiceDown: 'A system service is not running',
  Disconnected: 'Lost the connection to the Control Domain',
  UnknownChannel: 'The request was not understood',
};

const ADVICE: Record<string, string> = {
  NoSuchVm: 'It may have been removed from the VM directory. The list has been refreshed.',
  InvalidState: 'The machine is busy changing state; try again in a moment.',
  InvalidConfig: 'Fix the file named below; the other machines are not affected.',
  Unavailable: 'It was made on the other boot entry: restart into that entry to use it.',
  SwitchInProgress: 'Wait until the current switch has finished.',
  Superseded: 'The machine asked for last is the one shown.',
  Locked: 'Unlock the screen first.',
  PolicyDenied: 'An administrator rule refuses this device for that machine.',
  BackendFailed: 'The machine may not have started. Details below.',
  Timeout: 'The machine did not answer in time. It may be overloaded.',
  ServiceDown: 'The switcher reconnects by itself as soon as it is back.',
  Disconnected: 'Reconnecting…',
};

/**
 * Turns a failed request into what a person reads. InvalidConfig messages name the file, the
 * field and the reason ("file: field: reason"), which are split out when present.
 */
export function describeFailure(e: RequestFailure, action?: string): HumanError {
  const title = TITLES[e.name] ?? (action ? `Could not ${action}` : 'Something went wrong');
  let message = ADVICE[e.name] ?? '';
  if (e.name === 'InvalidConfig') {
    const m = /^(.*?\.json)[:\s]+([\w.[\]-]+)?[:\s]*(.*)$/.exec(e.message);
    if (m) message = `File ${m[1]}${m[2] ? `, field “${m[2]}”` : ''}: ${m[3] || 'invalid'}`;
  }
  return { title, message, detail: e.message };
}

export const STEP_LABELS: Record<SwitchProgressStep, string> = {
  'starting-vm': 'Starting the machine',
  'freeze-input': 'Holding keyboard and mouse',
  'move-gpu': 'Handing over the graphics card',
  'focus-input': 'Moving keyboard and mouse',
  'move-usb': 'Moving USB devices',
  publish: 'Showing the machine',
  rollback: 'Rolling back',
  done: 'Done',
  failed: 'Failed',
  pending: 'Next, once this switch is over',
  superseded: 'Replaced by a newer request',
};

/** Sub-steps (gpu-detach:…) and names from a newer vm-daemon have no label: shown as they are. */
export const stepLabel = (step: string): string =>
  (STEP_LABELS as Partial<Record<string, string>>)[step] ?? step;

export const STATE_LABELS: Record<string, string> = {
  stopped: 'Stopped',
  starting: 'Starting…',
  running: 'Running',
  paused: 'Paused',
  stopping: 'Shutting down…',
  crashed: 'Crashed',
};
export const stateLabel = (s: string): string => STATE_LABELS[s] ?? s;

/** What the tile and the VM view say of a running VM without a screen (Vm1.Display none). */
export const NO_SCREEN_LABEL = 'No screen — console only';

/**
 * What a running GPU VM's tile says instead of a thumbnail: its picture is drawn by the graphics
 * card passed through to it, which the Control Domain cannot capture (the device model's emulated
 * screen is not that picture), so no thumbnail is asked for (docs/gpu-handoff.md).
 */
export const GPU_SCREEN_LABEL = 'Its picture is on its graphics card';
/** The same while it holds the graphics card: the panel shows it right now. */
export const GPU_ON_SCREEN_LABEL = 'On the screen now';
