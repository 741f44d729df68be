// First: @bulkhead/contract changes dbus-next's marshalling before dbus-next loads
// (contract/src/dbus-next-marshalling.ts); the modules below load dbus-next.
import '@bulkhead/contract';

export * from './connect';
export * from './identity';
export * from './errors';
export * from './variants';
export * from './bus-values';
export * from './service-host';
export * from './client';
export * from './introspect';
export * from './private-bus';
export { Variant, Message } from 'dbus-next';
export type { MessageBus } from 'dbus-next';
export * from './logind';
