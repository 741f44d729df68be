import { memo, useEffect, useRef, type CSSProperties, type KeyboardEvent } from 'react';
import type { ConfigErrorModel, VmModel } from '../../common/model';
import { hotkeyForSlot } from '../../common/model';
import { GPU_ON_SCREEN_LABEL, GPU_SCREEN_LABEL, NO_SCREEN_LABEL, stateLabel } from '../../common/messages';
import { isLocked } from '../store';
import { useActions, useUi } from './context';
import { Icon } from './icons';
import { DiskJobBar, Welcome } from './MachineEditor';

const basename = (p: string) => p.split('/').pop() || p;

export function tileLabel(vm: VmModel, active: boolean, usbCount: number, ownsScreen = false): string {
  const parts = [vm.name];
  if (vm.slot) parts.push(`slot ${vm.slot} (${hotkeyForSlot(vm.slot)})`);
  parts.push(vm.unavailable ? 'not on this boot entry' : stateLabel(vm.state).replace('…', ''));
  if (vm.display === 'none' && !vm.unavailable) parts.push('no screen, console only');
  if (active) parts.push('active');
  if (usbCount) parts.push(`${usbCount} USB device${usbCount > 1 ? 's' : ''}`);
  if (vm.hasGpu) parts.push(ownsScreen ? 'graphics card, owns the screen' : 'graphics card');
  return parts.join(', ');
}

/** What a tile says where it has no thumbnail to show. */
function placeholderText(vm: VmModel, ownsScreen: boolean): string {
  if (vm.unavailable) return 'Not on this boot entry';
  if (vm.state === 'stopped') return 'Select to start';
  if (vm.state !== 'running') return stateLabel(vm.state);
  // Its own graphics card draws its picture: none to capture (none is asked for).
  if (vm.hasGpu) return ownsScreen ? GPU_ON_SCREEN_LABEL : GPU_SCREEN_LABEL;
  // Vm1.Display none: no screen will ever come (and none is asked for).
  return vm.display === 'none' ? NO_SCREEN_LABEL : 'Waiting for the screen…';
}

/**
 * Memoised: a tile renders again only when its VM object changes (the store keeps unchanged VMs'
 * objects across snapshots, share-unchanged.ts) or what it selects from the store does.
 */
const Tile = memo(function Tile({ vm }: { vm: VmModel }) {
  const actions = useActions();
  const active = useUi((s) => s.snapshot.activeVm === vm.path);
  // The GPU is this VM's (docs/gpu-handoff.md): its picture is on the panel, not in this tile.
  const ownsScreen = useUi((s) => s.snapshot.gpuHolder === vm.path);
  const thumb = useUi((s) => s.thumbnails[vm.path]);
  const usbCount = useUi((s) => s.snapshot.usbDevices.filter((d) => d.assignedVm === vm.path).length);
  const locked = useUi(isLocked);
  const switching = useUi((s) => s.progress?.status === 'running' && s.progress.target === vm.path);
  const busy = vm.state === 'starting' || vm.state === 'stopping' || switching;
  // A person's machine made on the other boot entry (Vm1.Unavailable): listed, kept, not started here.
  const unavailable = vm.unavailable !== '';
  const style = { '--vm-color': vm.color || '#6e7781' } as CSSProperties;
  return (
    <li className="tile-cell">
      <button
        type="button"
        className={`tile state-${vm.state}${active ? ' active' : ''}${unavailable ? ' unavailable' : ''}`}
        style={style}
        data-vm={vm.id}
        aria-label={tileLabel(vm, active, usbCount, ownsScreen)}
        aria-current={active ? 'true' : undefined}
        aria-disabled={locked || unavailable || undefined}
        onClick={() => !locked && !unavailable && void actions.switchTo(vm.path)}
      >
        <span className="tile-screen">
          {thumb && vm.state === 'running' && !vm.hasGpu ? (
            <img className="tile-thumb" alt="" src={`data:image/png;base64,${thumb}`} draggable={false} />
          ) : (
            <span className="tile-placeholder">
              <span className="tile-initial">{(vm.name || vm.id).slice(0, 1).toUpperCase()}</span>
              <span className="tile-placeholder-text">{placeholderText(vm, ownsScreen)}</span>
            </span>
          )}
          {busy && <span className="tile-busy" aria-hidden="true" />}
          {active && <span className="tile-active-badge">Active</span>}
        </span>
        <span className="tile-info">
          <span className="tile-swatch" aria-hidden="true" />
          <span className="tile-name">{vm.name || vm.id}</span>
          {vm.slot > 0 && <kbd className="tile-hotkey">{hotkeyForSlot(vm.slot)}</kbd>}
        </span>
        <span className="tile-meta">
          <span className={`pill pill-${vm.state}`}>{stateLabel(vm.state)}</span>
          <span className="tile-kind">{vm.kind}</span>
          {usbCount > 0 && (
            <span className="badge" title="USB devices attached">
              <Icon name="usb" size={14} /> {usbCount}
            </span>
          )}
          {vm.hasGpu && (
            <span className="badge" title="Has a graphics card">
              <Icon name="gpu" size={14} /> GPU
            </span>
          )}
          {ownsScreen && (
            <span
              className="badge badge-screen"
              title="This VM holds the graphics card: its picture is on the screen"
            >
              Owns the screen
            </span>
          )}
        </span>
        {unavailable && <span className="tile-error tile-unavailable">{vm.unavailable}</span>}
        {(vm.lastError || vm.state === 'crashed') && (
          <span className="tile-error">
            {vm.lastError || vm.stateReason || 'The machine stopped unexpectedly'}
          </span>
        )}
      </button>
      <DiskJobBar vm={vm} />
      <span className="tile-actions">
        <button
          type="button"
          className="ghost small"
          onClick={() => actions.showEditor({ kind: 'settings', vm: vm.path })}
          aria-label={`Settings of ${vm.name}`}
          disabled={locked}
        >
          Settings
        </button>
        {vm.state === 'running' || vm.state === 'paused' ? (
          <button
            type="button"
            className="ghost small"
            onClick={() => void actions.stopVm(vm.path)}
            aria-label={`Shut down ${vm.name}`}
            disabled={locked}
          >
            <Icon name="power" size={14} /> Shut down
          </button>
        ) : !unavailable && (vm.state === 'stopped' || vm.state === 'crashed') ? (
          <button
            type="button"
            className="ghost small"
            onClick={() => void actions.startVm(vm.path)}
            aria-label={`Start ${vm.name} in the background`}
            disabled={locked}
          >
            <Icon name="play" size={14} /> Start in background
          </button>
        ) : null}
      </span>
    </li>
  );
});

function BrokenTile({ err }: { err: ConfigErrorModel }) {
  return (
    <li className="tile-cell">
      <div className="tile broken" role="group" aria-label={`Invalid VM file ${basename(err.file)}`}>
        <span className="tile-screen">
          <span className="tile-placeholder">
            <Icon name="warn" size={36} />
            <span className="tile-placeholder-text">This machine cannot be loaded</span>
          </span>
        </span>
        <span className="tile-info">
          <span className="tile-name">{basename(err.file)}</span>
        </span>
        <span className="config-error" data-testid="config-error">
          {err.field ? (
            <>
              Field <code>{err.field}</code>: {err.reason}
            </>
          ) : (
            err.reason
          )}
          <span className="config-error-file">{err.file}</span>
        </span>
      </div>
    </li>
  );
}

/** Arrow keys move between tiles the way they are laid out on screen. */
function moveFocus(e: KeyboardEvent<HTMLElement>) {
  const keys = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End'];
  if (!keys.includes(e.key)) return;
  const tiles = Array.from(e.currentTarget.querySelectorAll<HTMLElement>('.tile[data-vm]'));
  const i = tiles.indexOf(document.activeElement as HTMLElement);
  if (tiles.length === 0) return;
  e.preventDefault();
  if (i < 0) return tiles[0].focus();
  const perRow = Math.max(1, tiles.filter((t) => t.offsetTop === tiles[0].offsetTop).length);
  let j = i;
  if (e.key === 'ArrowLeft') j = i - 1;
  if (e.key === 'ArrowRight') j = i + 1;
  if (e.key === 'ArrowUp') j = i - perRow;
  if (e.key === 'ArrowDown') j = i + perRow;
  if (e.key === 'Home') j = 0;
  if (e.key === 'End') j = tiles.length - 1;
  tiles[Math.max(0, Math.min(tiles.length - 1, j))].focus();
}

/** `shown` false: the tiles are covered by a VM's view (kept mounted): no thumbnails then. */
export function TileGrid({ shown = true }: { shown?: boolean }) {
  const actions = useActions();
  const vms = useUi((s) => s.snapshot.vms);
  const allErrors = useUi((s) => s.snapshot.configErrors);
  // A file vm-daemon still made a VM object of shows its error on that VM's own tile.
  const errors = allErrors.filter((e) => !vms.some((v) => v.configFile && v.configFile === e.file));
  const vmUp = useUi((s) => s.snapshot.daemons.vmManager.up);
  const accel = useUi((s) => s.snapshot.accelerator);
  const gridRef = useRef<HTMLUListElement>(null);

  useEffect(() => {
    if (!shown) return;
    actions.setThumbnailsVisible(true);
    return () => actions.setThumbnailsVisible(false);
  }, [actions, shown]);

  useEffect(() => {
    // Start with the keyboard on the first tile, so Enter works right away.
    if (!gridRef.current?.contains(document.activeElement))
      gridRef.current?.querySelector<HTMLElement>('.tile[data-vm]')?.focus();
  }, [vms.length]);

  return (
    <section className="machines" aria-labelledby="machines-title">
      <header className="section-head">
        <h1 id="machines-title">Machines</h1>
        <p className="section-sub">
          {vmUp
            ? `${vms.length} machine${vms.length === 1 ? '' : 's'}${accel ? ` · ${accel.toUpperCase()}` : ''} · press 1–9 or Ctrl+1–9 to switch, Ctrl+0 to come back here`
            : 'Waiting for the VM manager…'}
        </p>
      </header>
      {vmUp && vms.length === 0 && errors.length === 0 && <Welcome />}
      {vmUp && (vms.length > 0 || errors.length > 0) && (
        <div className="section-actions">
          <button type="button" className="primary" onClick={() => actions.showEditor({ kind: 'new' })}>
            New machine
          </button>
        </div>
      )}
      {!vmUp && (
        <div className="empty outage-empty" role="status">
          <Icon name="warn" size={28} />
          <div>
            <strong>The VM manager is not running.</strong>
            <br />
            Machines will appear here as soon as it is back.
          </div>
        </div>
      )}
      <ul className="tile-grid" ref={gridRef} onKeyDown={moveFocus} aria-label="Machines">
        {vms.map((vm) => (
          <Tile key={vm.path} vm={vm} />
        ))}
        {errors.map((err) => (
          <BrokenTile key={err.file + err.field} err={err} />
        ))}
      </ul>
    </section>
  );
}
