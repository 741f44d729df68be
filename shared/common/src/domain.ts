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
