/** A few line icons (24x24, currentColor), drawn here so the UI needs no icon font. */
const paths: Record<string, string> = {
  usb: 'M12 2v14m0 0a3 3 0 1 0 0 .01M12 6l-3 3v3l-2 0M12 9l3-2v3h2',
  gpu: 'M3 7h18v10H3zM7 17v3M11 17v3M15 17v3M8 12a2 2 0 1 0 4 0 2 2 0 1 0-4 0',
  lock: 'M6 11h12v9H6zM8 11V8a4 4 0 0 1 8 0v3',
  grid: 'M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z',
  pulse: 'M3 12h4l2-5 4 10 2-5h6',
  back: 'M15 6l-6 6 6 6',
  power: 'M12 3v8M6.3 7.3a8 8 0 1 0 11.4 0',
  play: 'M8 5l11 7-11 7z',
  warn: 'M12 3l10 18H2zM12 10v5M12 18v.01',
  check: 'M5 12l5 5 9-10',
  x: 'M6 6l12 12M18 6L6 18',
  monitor: 'M3 4h18v12H3zM8 20h8M12 16v4',
};

export function Icon({ name, size = 18 }: { name: keyof typeof paths | string; size?: number }) {
  return (
    <svg
      className="icon"
      width={size}
      height={size}
      viewBox="0 0 24 24"
      fill="none"
      stroke="currentColor"
      strokeWidth={1.8}
      strokeLinecap="round"
      strokeLinejoin="round"
      aria-hidden="true"
      focusable="false"
    >
      <path d={paths[name] ?? ''} />
    </svg>
  );
}
