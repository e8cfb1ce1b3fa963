// Owns the JSON shapes of a user on the API: as its owner sees it and as anyone may see it,
// snake_case fields as in the seed brief.
import type { UserRow } from "./user-store.ts";

/** A user as its owner sees it (with email); `publicUserJson` is what anyone may see. */
export function userJson(u: UserRow, status: string = u.status) {
  return {
    id: u.id,
    email: u.email,
    username: u.username,
    display_name: u.display_name,
    bio: u.bio,
    avatar_url: u.avatar_url,
    role: u.role,
    status,
    created_at: u.created_at.toISOString(),
  };
}

export function publicUserJson(u: UserRow, status: string = u.status) {
  const { email: _email, ...rest } = userJson(u, status);
  return rest;
}
