import type { UsbDeviceModel, VmModel } from '../../common/model';
import { isLocked } from '../store';
import { useActions, useUi } from './context';
import { Icon } from './icons';

const hex4 = (n: number) => n.toString(16).padStart(4, '0');

function holderName(path: string, vms: VmModel[]): string {
  if (path === '/' || !path) return 'Control Domain';
  return vms.find((v) => v.path === path)?.name ?? path.split('/').pop() ?? path;
}

function DeviceRow({ dev, vms }: { dev: UsbDeviceModel; vms: VmModel[] }) {
  const actions = useActions();
  const locked = useUi(isLocked);
  const title =
    dev.name || `${dev.vendor} ${dev.product}`.trim() || `${hex4(dev.vendorId)}:${hex4(dev.productId)}`;
  const inputOwned = dev.state === 'input';
  const assignable = vms.filter((v) => v.state === 'running' || v.state === 'paused');
  return (
    <li className="usb-row" aria-label={`${title}, held by ${holderName(dev.assignedVm, vms)}`}>
      <span className="usb-icon" aria-hidden="true">
        <Icon name="usb" size={20} />
      </span>
      <span className="usb-main">
        <span className="usb-name">{title}</span>
        <span className="usb-sub">
          {hex4(dev.vendorId)}:{hex4(dev.productId)} · port {dev.port || '?'}
          {dev.classes.length > 0 && ` · ${dev.classes.join(', ')}`}
          {dev.serial && ` · serial ${dev.serial}`}
        </span>
      </span>
      <span className={`pill pill-usb-${dev.state}`}>{dev.state}</span>
      <label className="usb-holder">
        <span className="visually-hidden">Machine holding {title}</span>
        <select
          value={dev.assignedVm || '/'}
          disabled={locked || inputOwned || dev.state === 'attaching' || dev.state === 'detaching'}
          onChange={(e) =>
            void (e.target.value === '/'
              ? actions.releaseUsb(dev.path)
              : actions.assignUsb(dev.path, e.target.value))
          }
        >
          <option value="/">Control Domain</option>
          {assignable.map((v) => (
            <option key={v.path} value={v.path}>
              {v.name}
            </option>
          ))}
          {dev.assignedVm !== '/' && !assignable.some((v) => v.path === dev.assignedVm) && (
            <option value={dev.assignedVm}>{holderName(dev.assignedVm, vms)}</option>
          )}
        </select>
      </label>
      <Toggle
        on={dev.sticky}
        disabled={locked || inputOwned}
        onToggle={() => void actions.setSticky(dev.path, !dev.sticky)}
        label={`Always give ${title} to ${holderName(dev.assignedVm, vms)}`}
        text="Sticky"
      />
      <Toggle
        on={dev.followFocus}
        disabled={locked || inputOwned}
        onToggle={() => void actions.setFollowFocus(dev.path, !dev.followFocus)}
        label={`${title} follows the active machine`}
        text="Follow focus"
      />
    </li>
  );
}

export function UsbPanel() {
  const devices = useUi((s) => s.snapshot.usbDevices);
  const vms = useUi((s) => s.snapshot.vms);
  const up = useUi((s) => s.snapshot.daemons.usb.up);
  return (
    <section className="panel" aria-labelledby="usb-title">
      <header className="section-head">
        <h1 id="usb-title">USB devices</h1>
        <p className="section-sub">
          Each device belongs to one machine at a time. Sticky devices always go back to their machine.
        </p>
      </header>
      {!up ? (
        <div className="empty outage-empty" role="status">
          <Icon name="warn" size={28} /> The USB service is not running. Devices will appear when it is back.
        </div>
      ) : devices.length === 0 ? (
        <div className="empty">No USB devices are connected.</div>
      ) : (
        <ul className="usb-list" aria-label="USB devices">
          {devices.map((d) => (
            <DeviceRow key={d.path} dev={d} vms={vms} />
          ))}
        </ul>
      )}
    </section>
  );
}

/** An on/off switch (role "switch"): its state in aria-checked and the knob, what it does in its label. */
function Toggle(props: {
  on: boolean;
  disabled: boolean;
  onToggle: () => void;
  label: string;
  text: string;
}) {
  return (
    <button
      type="button"
      role="switch"
      aria-checked={props.on}
      className={`toggle${props.on ? ' on' : ''}`}
      disabled={props.disabled}
      onClick={props.onToggle}
      aria-label={props.label}
    >
      <span className="toggle-knob" aria-hidden="true" /> {props.text}
    </button>
  );
}
