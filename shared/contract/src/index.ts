// First: changes dbus-next's marshalling before any of its modules loads (see the file).
import './dbus-next-marshalling';

export * from './generated';
export * from './types';
export * from './errors';
export * from './paths';
export * from './contract-values';
export { GrowableBufferWriter, marshallingChanges } from './dbus-next-marshalling';
