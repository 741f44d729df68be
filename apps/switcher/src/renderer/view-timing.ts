/**
 * The renderer's timing of each change of the view on screen (issue 17: hotkey to picture): the
 * push that caused it, the DOM commit, and the second animation frame after it. Reported to the
 * main process a while later (reportView), so the report is no work inside the frames it times.
 */
import { useLayoutEffect, useRef } from 'react';
import type { ViewTiming } from '../common/channels';

let lastPush = { channel: '', at: 0 };

/** Called for every push as it arrives, before it is applied to the store. */
export function notePush(channel: string): void {
  lastPush = { channel, at: Date.now() };
}

/** How long after the second frame the timing is sent. */
const REPORT_DELAY_MS = 3000;

export function useViewTiming(view: string, report: (t: ViewTiming) => void): void {
  const first = useRef(true);
  useLayoutEffect(() => {
    // The first view after the page loads is no switch.
    if (first.current) {
      first.current = false;
      return;
    }
    const { channel, at: pushAt } = lastPush;
    const domAt = Date.now();
    let raf = requestAnimationFrame(() => {
      raf = requestAnimationFrame(() => {
        raf = 0;
        const frameAt = Date.now();
        setTimeout(() => report({ view, channel, pushAt: pushAt || domAt, domAt, frameAt }), REPORT_DELAY_MS);
      });
    });
    // Replaced by a newer view before its frames came: only that one is timed.
    return () => {
      if (raf) cancelAnimationFrame(raf);
    };
  }, [view, report]);
}
