/** The config-file reader is shared (usb-daemon's rules and input-daemon's hotkeys use it too). */
export {
  MAX_FILE_BYTES,
  defaultFileRules,
  fileKind,
  readDefinitionFile,
  type FileRead,
  type FileRules,
} from '@bulkhead/common';
