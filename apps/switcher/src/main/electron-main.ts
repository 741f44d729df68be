/**
 * Electron entry of the switcher on the Control Domain: one full-screen kiosk window, sandboxed,
 * context-isolated, without Node in the renderer. The renderer reaches the core only through the
 * preload bridge's single request channel and push channel; the same core also serves the local
 * VNC proxy (through the web host on 127.0.0.1) for the VM view.
 *
 * Electron's binary cannot be downloaded on the build machines: this compiles against its types
 * and is packaged by electron-builder (electron-builder.yml) where it can be.
 */
import { join } from 'node:path';
import { app, BrowserWindow, ipcMain, session, type IpcMainInvokeEvent } from 'electron';
import { validateRequest, type PushChannel, type RequestOutcome } from '../common/channels';
import { toFailure } from './core';
import { startWebHost, DEFAULT_VM_RUN_DIR, type WebHost } from './web-host';

export const IPC_REQUEST = 'bulkhead:request';
export const IPC_PUSH = 'bulkhead:push';

const PRELOAD = join(__dirname, '..', 'preload', 'preload.bundle.js');

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  await app.whenReady();
  // The renderer loads nothing from the network and asks for no permissions.
  session.defaultSession.setPermissionRequestHandler((_wc, _perm, cb) => cb(false));

  const host: WebHost = await startWebHost({
    busAddress: flag('--bus'),
    vmRunDir: flag('--vm-run-dir') ?? DEFAULT_VM_RUN_DIR,
    injectInput: false, // on hardware, input comes from evdev through input-daemon
    port: 0,
  });
  // The page comes from the local web host (so the bundle's ES modules load as they do in a
  // browser); it still talks to the core only through the preload bridge.
  const origin = `http://127.0.0.1:${host.port}/`;

  const win = new BrowserWindow({
    fullscreen: true,
    kiosk: true,
    frame: false,
    backgroundColor: '#0d1117',
    show: false,
    webPreferences: {
      sandbox: true,
      contextIsolation: true,
      nodeIntegration: false,
      webSecurity: true,
      preload: PRELOAD,
      additionalArguments: [`--bulkhead-vnc-base=ws://127.0.0.1:${host.port}`],
    },
  });
  win.once('ready-to-show', () => win.show());
  win.webContents.on('will-navigate', (e) => e.preventDefault());
  win.webContents.setWindowOpenHandler(() => ({ action: 'deny' }));

  const fromOurPage = (e: IpcMainInvokeEvent) =>
    !!e.senderFrame?.url.startsWith(origin) && e.sender === win.webContents;
  ipcMain.handle(
    IPC_REQUEST,
    async (e, channel: unknown, args: unknown): Promise<RequestOutcome<unknown>> => {
      if (!fromOurPage(e))
        return { ok: false, error: { name: 'AccessDenied', message: 'not the switcher page' } };
      try {
        const v = validateRequest(channel, args);
        return { ok: true, result: await host.core.handle(v.channel, v.args, 'electron') };
      } catch (err) {
        return { ok: false, error: toFailure(err) };
      }
    },
  );
  host.core.on('push', (channel: PushChannel, payload: unknown) => {
    if (!win.isDestroyed()) win.webContents.send(IPC_PUSH, channel, payload);
  });

  await win.loadURL(host.url);
  app.on('window-all-closed', () => void host.close().finally(() => app.quit()));
}

main().catch((e) => {
  console.error(`switcher: ${(e as Error).stack ?? e}`);
  app.exit(1);
});
