import { join } from 'node:path';

/**
 * The native PAM addon (src/native/pam.cc, built next to the evdev addon into
 * build/Release/pam.node) and its types. The check runs on a libuv worker thread: a PAM module
 * that sleeps after a failure never stalls the seat's event loop.
 */

/** What PAM said about one attempt: `code` is PAM's return value, `name` its pam_strerror text. */
export interface PamResult {
  ok: boolean;
  code: number;
  name: string;
  /** The PAM call that decided: start | authenticate | account. */
  step: string;
}

interface PamAddon {
  authenticate(service: string, user: string, password: string, confdir: string): Promise<PamResult>;
}

/** The addon could not be loaded (not built, or libpam missing). */
export class PamUnavailableError extends Error {
  override name = 'PamUnavailableError';
}

let addon: PamAddon | null = null;

function native(): PamAddon {
  if (addon) return addon;
  const file = join(__dirname, '..', '..', 'build', 'Release', 'pam.node');
  try {
    // A compiled addon can only be loaded with require().
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as PamAddon;
    return addon;
  } catch (e) {
    throw new PamUnavailableError(
      `cannot load the PAM addon ${file} (needs libpam0g-dev at build time; run 'npm run build -w @bulkhead/input-daemon'): ${(e as Error).message}`,
    );
  }
}

/** Checks a password; what the daemon's lock uses. Real: {@link PamPasswordChecker}. */
export interface PasswordChecker {
  check(user: string, password: string): Promise<PamResult>;
}

/**
 * Linux-PAM through `service` (the image installs /etc/pam.d/bulkhead-unlock: common-auth +
 * common-account). `confdir` replaces /etc/pam.d (pam_start_confdir), for tests only.
 */
export class PamPasswordChecker implements PasswordChecker {
  constructor(
    private readonly service: string,
    private readonly confdir = '',
  ) {}

  check(user: string, password: string): Promise<PamResult> {
    return native().authenticate(this.service, user, password, this.confdir);
  }
}
