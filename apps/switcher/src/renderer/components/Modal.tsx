/**
 * A modal dialog over the dimmed backdrop: the one place its role and ARIA labelling are set, for the
 * machine forms (a <form>, busy while a call runs) and the USB prompt (an alertdialog).
 */
import type { FormEvent, ReactNode } from 'react';

export function Modal(props: {
  /** The id of the element that names the dialog (its heading). */
  titleId: string;
  /** The id of the element that says what an alertdialog asks. */
  describedBy?: string;
  role?: 'dialog' | 'alertdialog';
  /** Extra class besides "modal". */
  className?: string;
  /** Set on a form while its call runs. */
  busy?: boolean;
  /** Makes the dialog a <form> submitted with this handler. */
  onSubmit?: (e: FormEvent<HTMLFormElement>) => void;
  children: ReactNode;
}) {
  const attrs = {
    className: props.className ? `modal ${props.className}` : 'modal',
    role: props.role ?? 'dialog',
    'aria-modal': true,
    'aria-labelledby': props.titleId,
    'aria-describedby': props.describedBy,
    'aria-busy': props.busy,
  };
  return (
    <div className="modal-backdrop">
      {props.onSubmit ? (
        <form {...attrs} onSubmit={props.onSubmit}>
          {props.children}
        </form>
      ) : (
        <div {...attrs}>{props.children}</div>
      )}
    </div>
  );
}
