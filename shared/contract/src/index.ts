export * from './generated';
export * from './types';
export * from './errors';
export * from './paths';
export * from './contract-values';
