// The JSON API of `observer serve`; the session cookie goes along (same origin).

// GET a JSON API path; a failure is thrown with the server's reason.
export async function api(path, params) {
  const query = params ? '?' + params.toString() : '';
  const response = await fetch(path + query, { credentials: 'same-origin' });
  if (response.status === 401) {
    throw new Error('not signed in: open the address `observer serve` printed (it ends in ?token=…)');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}
