export * from './atomic-file';
export * from './log';
export * from './typed-emitter';
export * from './domain';
export * from './daemon-main';
export * from './config-file';
