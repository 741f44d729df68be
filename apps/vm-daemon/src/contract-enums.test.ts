/**
 * The enums vm-daemon's code is typed by (@bulkhead/common) are the ones the contract XML declares
 * (org.bulkhead.Enum): the same values in the same order, so neither side can grow a value alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VM1_KIND_VALUES,
  VM1_STATE_VALUES,
  VM_MANAGER1_SWITCH_PROGRESS_STEP_VALUES,
} from '@bulkhead/contract';
import { SWITCH_PROGRESS_STEPS, VM_KINDS, VM_STATES } from '@bulkhead/common';

test("common's VM states, kinds and switch steps are the contract's enums", () => {
  assert.deepEqual([...VM_STATES], [...VM1_STATE_VALUES], 'Vm1.State');
  assert.deepEqual([...VM_KINDS], [...VM1_KIND_VALUES], 'Vm1.Kind');
  assert.deepEqual(
    [...SWITCH_PROGRESS_STEPS],
    [...VM_MANAGER1_SWITCH_PROGRESS_STEP_VALUES],
    'SwitchProgress step',
  );
});
