/**
 * The person's own machines: the New-machine dialog, a machine's settings (with Delete behind a
 * confirmation), the first-boot welcome and a disk import's progress bar. vm-daemon validates
 * every value and names the option it refuses; the dialogs show that in words next to the form.
 */
import { useState, type FormEvent, type ReactNode } from 'react';
import type { MachineOptions, RequestFailure } from '../../common/channels';
import type { VmModel } from '../../common/model';
import { hotkeyForSlot } from '../../common/model';
import { useActions, useUi } from './context';
import { Icon } from './icons';
import { Modal } from './Modal';

/** vm-daemon's option names → the labels of the form fields they come from. */
const OPTION_LABELS: Record<string, string> = {
  name: 'Name',
  id: 'Name',
  slot: 'Slot',
  color: 'Colour',
  memory_mib: 'Memory',
  vcpus: 'Processors',
  network: 'Network',
  usb_auto_attach: 'USB devices',
  disk_size_mib: 'Disk size',
  disk_format: 'Disk format',
  disk_import: 'Disk image',
  cdrom: 'Install from',
  disk: 'Disk',
};

/** A failure as a sentence about the form: "Memory: must be an integer from 16 to …". */
export function machineProblem(e: RequestFailure): string {
  if (e.name === 'NotOwner')
    return 'This machine is managed by your administrator: you can start, stop and switch to it, but not change or delete it.';
  if (e.name === 'ServiceDown') return 'The VM manager is not running; try again when it is back.';
  if (e.name === 'InvalidState' || e.name === 'Unavailable')
    return e.message.replace(/^cannot \w+ /, '').replace(/^./, (c) => c.toUpperCase());
  const m = /^(\w+): (.*)$/s.exec(e.message);
  if (e.name === 'InvalidArgument' && m && OPTION_LABELS[m[1]]) return `${OPTION_LABELS[m[1]]}: ${m[2]}`;
  return e.message || e.name;
}

const COLORS = ['#2a6fdb', '#2e7d32', '#d9822b', '#8e44ad', '#c0392b', '#00897b'];

/** Slots no machine uses (`except`: the machine being edited keeps its own). */
function freeSlots(vms: VmModel[], except?: string): number[] {
  const used = new Set(vms.filter((v) => v.path !== except).map((v) => v.slot));
  return [1, 2, 3, 4, 5, 6, 7, 8, 9].filter((s) => !used.has(s));
}

function Problem({ text }: { text: string | null }) {
  if (!text) return null;
  return (
    <p className="form-problem" role="alert">
      <Icon name="warn" size={16} /> {text}
    </p>
  );
}

type DiskChoice = 'new' | 'import' | 'none';

/** A checkbox with its words, as the Settings dialog's choices are shown. */
function CheckChoice(props: {
  name: string;
  checked: boolean;
  setChecked: (checked: boolean) => void;
  children: ReactNode;
}) {
  return (
    <label className="choice">
      <input
        type="checkbox"
        name={props.name}
        checked={props.checked}
        onChange={(e) => props.setChecked(e.target.checked)}
      />{' '}
      {props.children}
    </label>
  );
}

/** One choice of the New machine dialog's Disk radio group, with what follows its button. */
function DiskRadio(props: {
  value: DiskChoice;
  disk: DiskChoice;
  setDisk: (d: DiskChoice) => void;
  children: ReactNode;
}) {
  return (
    <label className="choice">
      <input
        type="radio"
        name="disk"
        value={props.value}
        checked={props.disk === props.value}
        onChange={() => props.setDisk(props.value)}
      />{' '}
      {props.children}
    </label>
  );
}

/** "New machine": name, colour, slot, memory, processors, disk (new or imported), installer, network. */
export function NewMachineDialog() {
  const actions = useActions();
  const vms = useUi((s) => s.snapshot.vms);
  const slots = freeSlots(vms);
  const [name, setName] = useState('');
  const [color, setColor] = useState(COLORS[vms.length % COLORS.length]);
  const [slot, setSlot] = useState(slots[0] ?? 0);
  const [memoryMiB, setMemory] = useState(1024);
  const [vcpus, setVcpus] = useState(1);
  const [disk, setDisk] = useState<DiskChoice>('new');
  const [diskSizeMiB, setDiskSize] = useState(8192);
  const [diskImport, setDiskImport] = useState('');
  const [cdrom, setCdrom] = useState('');
  // On the Xen boot entry a machine has no NAT network (vm-daemon refuses 'user' there).
  const xen = useUi((s) => s.snapshot.accelerator) === 'xen';
  const [network, setNetwork] = useState(xen ? 'none' : 'user');
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const options: MachineOptions = { color, memoryMiB, vcpus, network };
    if (slot) options.slot = slot;
    if (disk === 'new') options.diskSizeMiB = diskSizeMiB;
    if (disk === 'import') options.diskImport = diskImport;
    if (cdrom) options.cdrom = cdrom;
    setBusy(true);
    const failure = await actions.createVm(name, options);
    setBusy(false);
    setProblem(failure ? machineProblem(failure) : null);
  };

  return (
    <Modal titleId="new-machine-title" className="machine-form" busy={busy} onSubmit={(e) => void submit(e)}>
      <h2 id="new-machine-title">New machine</h2>
      {slots.length === 0 && <Problem text="Every slot (1–9) is taken: delete a machine first." />}
      <label>
        Name
        <input
          name="name"
          value={name}
          maxLength={64}
          required
          autoFocus
          onChange={(e) => setName(e.target.value)}
        />
      </label>
      <div className="form-row">
        <label>
          Colour
          <input name="color" type="color" value={color} onChange={(e) => setColor(e.target.value)} />
        </label>
        <SlotSelect slots={slots} slot={slot} setSlot={setSlot} />
      </div>
      <SizingRow memoryMiB={memoryMiB} setMemory={setMemory} vcpus={vcpus} setVcpus={setVcpus} />
      <fieldset>
        <legend>Disk</legend>
        <DiskRadio value="new" disk={disk} setDisk={setDisk}>
          New disk of{' '}
          <input
            name="disk-size"
            type="number"
            min={1}
            aria-label="Disk size (MiB)"
            value={diskSizeMiB}
            disabled={disk !== 'new'}
            onChange={(e) => setDiskSize(Number(e.target.value))}
          />{' '}
          MiB
        </DiskRadio>
        <DiskRadio value="import" disk={disk} setDisk={setDisk}>
          Import an image from a USB stick (qcow2, VHD, VHDX, raw)
        </DiskRadio>
        {disk === 'import' && (
          <input
            name="disk-import"
            aria-label="Disk image to import"
            placeholder="/media/bulkhead/…/disk.vhd"
            value={diskImport}
            onChange={(e) => setDiskImport(e.target.value)}
          />
        )}
        <DiskRadio value="none" disk={disk} setDisk={setDisk}>
          No disk
        </DiskRadio>
      </fieldset>
      <label>
        Install from (an ISO on a USB stick, optional)
        <input
          name="cdrom"
          placeholder="/media/bulkhead/…/installer.iso"
          value={cdrom}
          onChange={(e) => setCdrom(e.target.value)}
        />
      </label>
      <NetworkSelect network={network} setNetwork={setNetwork} />
      <Problem text={problem} />
      <div className="modal-actions">
        <button type="button" className="ghost" onClick={() => actions.showEditor(null)}>
          Cancel
        </button>
        <button type="submit" className="primary" disabled={busy || slots.length === 0}>
          {busy ? 'Creating…' : 'Create machine'}
        </button>
      </div>
    </Modal>
  );
}

/** A machine's settings: what Update changes, eject, and Delete behind a confirmation. */
export function MachineSettings({ vm }: { vm: VmModel }) {
  const actions = useActions();
  const vms = useUi((s) => s.snapshot.vms);
  const [name, setName] = useState(vm.name);
  const [color, setColor] = useState(vm.color);
  const [slot, setSlot] = useState(vm.slot);
  const [memoryMiB, setMemory] = useState(vm.memoryMiB);
  const [vcpus, setVcpus] = useState(vm.vcpus);
  const [usbAutoAttach, setUsbAutoAttach] = useState(vm.usbAutoAttach);
  const [network, setNetwork] = useState(vm.network);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [removeDisks, setRemoveDisks] = useState(true);
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const admin = vm.owner !== 'person';
  const running = vm.state !== 'stopped' && vm.state !== 'crashed';
  // Made on the other boot entry (Vm1.Unavailable): kept as it is; it can only be deleted here.
  const unavailable = vm.unavailable !== '';
  const locked = admin || running || unavailable;

  const run = async (p: Promise<RequestFailure | null>) => {
    setBusy(true);
    const failure = await p;
    setBusy(false);
    setProblem(failure ? machineProblem(failure) : null);
  };
  const save = (e: FormEvent) => {
    e.preventDefault();
    const options: MachineOptions = {};
    if (name !== vm.name) options.name = name;
    if (color !== vm.color) options.color = color;
    if (slot !== vm.slot) options.slot = slot;
    if (memoryMiB !== vm.memoryMiB) options.memoryMiB = memoryMiB;
    if (vcpus !== vm.vcpus) options.vcpus = vcpus;
    if (usbAutoAttach !== vm.usbAutoAttach) options.usbAutoAttach = usbAutoAttach;
    if (network !== vm.network) options.network = network;
    void run(actions.updateVm(vm.path, options));
  };

  return (
    <Modal titleId="settings-title" className="machine-form" busy={busy} onSubmit={save}>
      <h2 id="settings-title">Settings of {vm.name}</h2>
      {admin && (
        <p className="form-note">
          This machine is managed by your administrator: you can start, stop and switch to it, but not change
          or delete it.
        </p>
      )}
      {!admin && running && <p className="form-note">Shut {vm.name} down to change or delete it.</p>}
      {!admin && unavailable && (
        <p className="form-note">
          {vm.name} cannot run or be changed on this boot entry: {vm.unavailable}.
        </p>
      )}
      <fieldset disabled={locked || confirmDelete}>
        <label>
          Name
          <input name="name" value={name} maxLength={64} onChange={(e) => setName(e.target.value)} />
        </label>
        <div className="form-row">
          <label>
            Colour
            <input name="color" type="color" value={color} onChange={(e) => setColor(e.target.value)} />
          </label>
          <SlotSelect slots={freeSlots(vms, vm.path)} slot={slot} setSlot={setSlot} />
        </div>
        <SizingRow memoryMiB={memoryMiB} setMemory={setMemory} vcpus={vcpus} setVcpus={setVcpus} />
        <NetworkSelect network={network} setNetwork={setNetwork} />
        <CheckChoice name="usb-auto-attach" checked={usbAutoAttach} setChecked={setUsbAutoAttach}>
          New USB devices go to this machine while it is in front
        </CheckChoice>
      </fieldset>
      {vm.cdrom && !admin && !unavailable && (
        // Also while it runs: once the installer is done, the medium goes at once.
        <p className="form-note">
          Installing from {vm.cdrom.split('/').pop()}.{' '}
          <button
            type="button"
            className="ghost small"
            disabled={busy}
            onClick={() => void run(actions.ejectVm(vm.path))}
          >
            Eject {vm.cdrom.split('/').pop()}
          </button>{' '}
          (the next start boots from the disk)
        </p>
      )}
      <Problem text={problem} />
      {confirmDelete ? (
        <div className="delete-confirm" role="alertdialog" aria-labelledby="delete-title">
          <p id="delete-title">
            <strong>Delete {vm.name}?</strong> This cannot be undone.
          </p>
          <CheckChoice name="remove-disks" checked={removeDisks} setChecked={setRemoveDisks}>
            Also delete its disk and everything on it
          </CheckChoice>
          <div className="modal-actions">
            <button type="button" className="ghost" onClick={() => setConfirmDelete(false)}>
              Keep it
            </button>
            <button
              type="button"
              className="danger"
              disabled={busy}
              onClick={() => void run(actions.deleteVm(vm.path, removeDisks))}
            >
              Delete {vm.name}
            </button>
          </div>
        </div>
      ) : (
        <div className="modal-actions">
          {!admin && !running && (
            <button type="button" className="ghost danger-text" onClick={() => setConfirmDelete(true)}>
              Delete…
            </button>
          )}
          <button type="button" className="ghost" onClick={() => actions.showEditor(null)}>
            Close
          </button>
          {!locked && (
            <button type="submit" className="primary" disabled={busy}>
              Save
            </button>
          )}
        </div>
      )}
    </Modal>
  );
}

/** The dialog the store says is open, if any. */
export function MachineEditor() {
  const editor = useUi((s) => s.editor);
  const vm = useUi((s) =>
    s.editor?.kind === 'settings'
      ? s.snapshot.vms.find((v) => v.path === (s.editor as { vm: string }).vm)
      : undefined,
  );
  if (!editor) return null;
  if (editor.kind === 'new') return <NewMachineDialog />;
  // The machine went (deleted elsewhere, the VM manager restarted): nothing to show.
  return vm ? <MachineSettings key={vm.path} vm={vm} /> : null;
}

/** First boot, no machines yet: what this is and the way to the first machine. */
export function Welcome() {
  const actions = useActions();
  return (
    <div className="welcome" role="region" aria-labelledby="welcome-title">
      <h2 id="welcome-title">Welcome</h2>
      <p>
        There are no machines yet. A machine is a separate computer inside this one: what runs in it cannot
        see your other machines. Make one, then install an operating system from a USB stick.
      </p>
      <button type="button" className="primary" onClick={() => actions.showEditor({ kind: 'new' })}>
        New machine
      </button>
    </div>
  );
}

/** A disk import running for a machine: how far, and Cancel. */
export function DiskJobBar({ vm }: { vm: VmModel }) {
  const actions = useActions();
  if (!vm.diskJob) return null;
  return (
    <span className="disk-job">
      <span
        className="progress"
        role="progressbar"
        aria-label={`Importing the disk of ${vm.name}`}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={vm.diskJobProgress}
      >
        <span className="progress-fill" style={{ width: `${vm.diskJobProgress}%` }} />
      </span>
      <span className="disk-job-text">Importing disk… {vm.diskJobProgress}%</span>
      <button type="button" className="ghost small" onClick={() => void actions.cancelDiskJob(vm.path)}>
        Cancel import
      </button>
    </span>
  );
}

/** The slot picker of both dialogs (New machine, Settings): each free slot with its hotkey. */
function SlotSelect(props: { slots: number[]; slot: number; setSlot: (slot: number) => void }) {
  return (
    <label>
      Slot
      <select name="slot" value={props.slot} onChange={(e) => props.setSlot(Number(e.target.value))}>
        {props.slots.map((s) => (
          <option key={s} value={s}>
            {s} ({hotkeyForSlot(s)})
          </option>
        ))}
      </select>
    </label>
  );
}

/** Memory and processors, as both dialogs ask for them (vm-daemon validates the values). */
function SizingRow(props: {
  memoryMiB: number;
  setMemory: (mib: number) => void;
  vcpus: number;
  setVcpus: (n: number) => void;
}) {
  return (
    <div className="form-row">
      <label>
        Memory (MiB)
        <input
          name="memory"
          type="number"
          min={16}
          value={props.memoryMiB}
          onChange={(e) => props.setMemory(Number(e.target.value))}
        />
      </label>
      <label>
        Processors
        <input
          name="vcpus"
          type="number"
          min={1}
          max={64}
          value={props.vcpus}
          onChange={(e) => props.setVcpus(Number(e.target.value))}
        />
      </label>
    </div>
  );
}

/**
 * The network of both dialogs (Vm1.Network): the ones the person may pick. An administrator's
 * bridge is shown as what it is (their settings are read-only), never offered. On the Xen boot
 * entry (Accelerator xen) there is no shared Internet: it is QEMU's user-mode network, which a
 * Xen domain does not have, and vm-daemon refuses it there by name.
 */
function NetworkSelect(props: { network: string; setNetwork: (network: string) => void }) {
  const bridge = props.network.startsWith('bridge:') ? props.network : null;
  const xen = useUi((s) => s.snapshot.accelerator) === 'xen';
  return (
    <label>
      Network
      <select name="network" value={props.network} onChange={(e) => props.setNetwork(e.target.value)}>
        {(!xen || props.network === 'user') && <option value="user">Internet (shared)</option>}
        <option value="none">{xen ? 'None (no shared Internet on the Xen boot entry)' : 'None'}</option>
        {bridge && (
          <option value={bridge}>Bridge {bridge.slice('bridge:'.length)} (set by the administrator)</option>
        )}
      </select>
    </label>
  );
}
