/** VM lifecycle states, as published in org.bulkhead.Vm1.State. */
export const VM_STATES = ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed'] as const;
export type VmState = (typeof VM_STATES)[number];

export const VM_KINDS = ['personal', 'business', 'service'] as const;
export type VmKind = (typeof VM_KINDS)[number];

/** Slot 0 is the switcher; VMs take slots 1-9 (Ctrl+1 ... Ctrl+9). */
export const SWITCHER_SLOT = 0;
export const MAX_SLOT = 9;

/** Steps of a switch transaction, in order, as recorded in LastSwitch and SwitchProgress. */
export const SWITCH_STEPS = [
  'starting-vm',
  'freeze-input',
  'move-gpu',
  'focus-input',
  'move-usb',
  'publish',
] as const;
export type SwitchStep = (typeof SWITCH_STEPS)[number];

/**
 * Every step name SwitchProgress may report: the steps above, then how the switch ended (or that
 * it is being rolled back), and for a request made while another switch runs: 'pending' (it runs
 * when that switch is over) or 'superseded' (a newer request replaced it before it ran). The one
 * definition vm-daemon and the switcher's labels are typed by.
 */
export const SWITCH_PROGRESS_STEPS = [
  ...SWITCH_STEPS,
  'rollback',
  'done',
  'failed',
  'pending',
  'superseded',
] as const;
export type SwitchProgressStep = (typeof SWITCH_PROGRESS_STEPS)[number];
