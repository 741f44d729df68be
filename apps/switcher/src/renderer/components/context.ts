import { createContext, useContext } from 'react';
import { useStore } from 'zustand';
import type { Actions } from '../actions';
import type { UiState, UiStore } from '../store';

export const StoreContext = createContext<UiStore | null>(null);
export const ActionsContext = createContext<Actions | null>(null);

export function useUi<T>(selector: (s: UiState) => T): T {
  const store = useContext(StoreContext);
  if (!store) throw new Error('useUi outside <StoreContext>');
  return useStore(store, selector);
}

export function useActions(): Actions {
  const a = useContext(ActionsContext);
  if (!a) throw new Error('useActions outside <ActionsContext>');
  return a;
}
