import type { SinkFactory } from '../input-service';
import type { InputSink } from './sink';
import { QmpSink, type QmpConnection, type QmpConnector } from './qmp-sink';

export interface VmSinkFactoryOptions {
  connect: QmpConnector;
  /**
   * The uinput fast path (createVmUinputSink), or null where there is no /dev/uinput. It takes the
   * connection it is given; it throws when QEMU refuses its input-linux object.
   */
  fastPath: ((target: string, vmId: string, qmp: QmpConnection) => Promise<InputSink>) | null;
  warn: (message: string) => void;
}

/**
 * The sink of a VM: the uinput fast path where it works, else QMP input-send-event.
 *
 * The fallback never reuses the connection the fast path's attempt ran on: that attempt may leave
 * it closed (in one CI run QEMU 7.2 closed it after an `object-del`, and every key sent on it
 * afterwards was lost), and a refused attempt says nothing good about the connection's state. It
 * is closed, and the QmpSink gets a connection of its own.
 */
export function vmSinkFactory(opts: VmSinkFactoryOptions): SinkFactory {
  return {
    async forVm(target, vmId, socket) {
      if (opts.fastPath) {
        const qmp = await opts.connect(socket);
        try {
          return await opts.fastPath(target, vmId, qmp);
        } catch (e) {
          opts.warn(
            `${target}: uinput fast path failed (${(e as Error).message}); using QMP input-send-event`,
          );
          await qmp.close().catch(() => undefined);
        }
      }
      const qmp = await opts.connect(socket);
      return new QmpSink(target, qmp, socket, { onError: (e) => opts.warn(`${target}: ${e.message}`) });
    },
  };
}
