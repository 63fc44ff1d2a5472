// Who is logged in and with which role, fetched once per page load. The server
// enforces roles on every call; this only decides which controls to show.

import { createContext, useContext } from "react";
import type { Me, Role } from "./api";

export const MeContext = createContext<Me>({ username: "", role: null });

export function useMe(): Me {
  return useContext(MeContext);
}

const RANK: Record<Role, number> = { viewer: 1, editor: 2, admin: 3 };

export function canEdit(role: Role | null): boolean {
  return role !== null && RANK[role] >= RANK.editor;
}
