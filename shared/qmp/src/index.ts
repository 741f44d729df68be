export * from './qmp-client';
