/**
 * D-Bus property dicts as the daemon mirrors receive them. Turning them into the switcher's model is
 * generated from the contract (<Interface>ViewPatch in @bulkhead/contract), one entry per property.
 */
export type Props = Record<string, unknown>;
