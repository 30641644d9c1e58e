"""Web UI security over real HTTP (requests) against the in-process API server: session
cookie flags, CSRF on every state change, HTML escaping of user-chosen names, other users'
files and volumes out of reach by URL guessing, expired sessions, login throttling, logout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from api_helpers import ApiServer

XSS = "<script>alert(1)</script>"
XSS_C = "<img src=x onerror=alert(1)>"      # container names cannot hold '/'


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(tmp_path_factory.mktemp("ui-sec"),
                   plugins=["identity", "compute", "ui"]) as srv:
        ident = srv.host.plugin("identity").service
        srv.call(ident.add_user("alice", password="alice-pw-1"))
        srv.call(ident.add_user("bob", password="bob-pw-1"))
        srv.call(ident.add_user("carol", password="carol-pw-1"))
        yield srv


def login(api: ApiServer, user: str, password: str) -> requests.Session:
    """A browser-like session logged in through the form."""
    s = requests.Session()
    r = s.post(api.url + "/ui/login", data={"username": user, "password": password},
               allow_redirects=False)
    assert r.status_code == 303, r.text
    return s


def csrf(s: requests.Session, api: ApiServer) -> str:
    """The CSRF token the pages carry."""
    page = s.get(api.url + "/ui/").text
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)


def test_cookie_flags_and_logout_revokes(api: ApiServer) -> None:
    r = requests.post(api.url + "/ui/login", data={"username": "alice", "password": "alice-pw-1"},
                      allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie            # plain HTTP here; Secure over TLS
    token = r.cookies["archip_session"]
    ident = api.host.plugin("identity").service
    assert api.call(ident.authenticate(token)).name == "alice"
    s = requests.Session()
    s.cookies.set("archip_session", token)
    page = s.get(api.url + "/ui/")
    assert page.status_code == 200 and "Hello, alice" in page.text
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    assert s.post(api.url + "/ui/logout", data={"csrf": csrf(s, api)},
                  allow_redirects=False).status_code == 303
    from archipelago.errors import Unauthorized
    with pytest.raises(Unauthorized):
        api.call(ident.authenticate(token))  # the token itself is gone, not only the cookie
    assert s.get(api.url + "/ui/", allow_redirects=False).headers["Location"] == "/ui/login"


def test_secure_cookie_when_configured(tmp_path) -> None:  # noqa: ANN001
    with ApiServer(tmp_path, plugins=["identity", "ui"], overrides=["ui.secure_cookie=true"]) as srv:
        srv.call(srv.host.plugin("identity").service.add_user("dora", password="dora-pw-1"))
        r = requests.post(srv.url + "/ui/login", data={"username": "dora", "password": "dora-pw-1"},
                          allow_redirects=False)
        assert "Secure" in r.headers["Set-Cookie"]
        # without compute and billing their pages are hidden and absent
        s = requests.Session()
        s.cookies.set("archip_session", r.cookies["archip_session"])
        page = s.get(srv.url + "/ui/").text
        assert ">Files<" in page and ">Images<" in page
        assert ">Servers<" not in page and ">Billing<" not in page and ">Volumes<" not in page
        assert s.get(srv.url + "/ui/servers").status_code == 404
        assert s.get(srv.url + "/ui/billing").status_code == 404


def test_state_changes_need_the_csrf_token(api: ApiServer) -> None:
    s = login(api, "alice", "alice-pw-1")
    token = csrf(s, api)
    for data in ({"name": "nocsrf"}, {"name": "nocsrf", "csrf": "0" * 64}):
        r = s.post(api.url + "/ui/files", data=data)
        assert r.status_code == 403 and "security token" in r.text
    r = s.put(api.url + "/ui/files/c/any/upload?name=x", data=b"x")
    assert r.status_code == 403
    r = s.post(api.url + "/ui/logout", data={})
    assert r.status_code == 403
    containers = s.get(api.url + "/ui/files").text
    assert "nocsrf" not in containers                # nothing was made
    # another session's token is not this one's
    other = csrf(login(api, "alice", "alice-pw-1"), api)
    assert other != token
    assert s.post(api.url + "/ui/files", data={"name": "nocsrf", "csrf": other}).status_code == 403
    # a cross-site form (even with the right token, even the login form) is refused
    r = s.post(api.url + "/ui/files", data={"name": "xsite", "csrf": token},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = requests.post(api.url + "/ui/login", data={"username": "alice", "password": "alice-pw-1"},
                      headers={"Origin": "http://evil.example"}, allow_redirects=False)
    assert r.status_code == 403 and "archip_session" not in r.cookies
    ok = s.post(api.url + "/ui/files", data={"name": "withcsrf", "csrf": token},
                headers={"Origin": api.url}, allow_redirects=False)
    assert ok.status_code == 303


def test_names_render_as_text(api: ApiServer) -> None:
    s = login(api, "alice", "alice-pw-1")
    token = csrf(s, api)
    assert s.post(api.url + "/ui/files", data={"name": XSS_C, "csrf": token}).status_code == 200
    c = quote(XSS_C, safe="")
    r = s.put(api.url + f"/ui/files/c/{c}/upload?name={quote(XSS, safe='')}",
              data=b"hello", headers={"X-CSRF-Token": token})
    assert r.status_code == 201, r.text
    for page in (s.get(api.url + "/ui/files").text, s.get(api.url + f"/ui/files/c/{c}").text,
                 s.get(api.url + f"/ui/files/c/{c}/object", params={"name": XSS}).text):
        assert XSS not in page and XSS_C not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "&lt;img src=x" in page
    # an error message echoing a bad name is escaped too (volume names cannot hold '<')
    r = s.post(api.url + "/ui/files", data={"name": "a/" + XSS, "csrf": token})
    assert r.status_code == 400 and XSS not in r.text
    # a failed login echoes the user name escaped
    r = requests.post(api.url + "/ui/login", data={"username": XSS, "password": "x"})
    assert r.status_code == 401 and XSS not in r.text and "&lt;script&gt;" in r.text
    assert "script-src" not in r.headers["Content-Security-Policy"]  # default-src 'self' only


def test_other_users_files_and_volumes_are_out_of_reach(api: ApiServer) -> None:
    alice = login(api, "alice", "alice-pw-1")
    token = csrf(alice, api)
    alice.post(api.url + "/ui/files", data={"name": "private", "csrf": token})
    assert alice.put(api.url + "/ui/files/c/private/upload?name=secret.txt", data=b"secret",
                     headers={"X-CSRF-Token": token}).status_code == 201
    alice_uuid = api.call(api.host.plugin("identity").service.user("alice")).uuid
    bob = login(api, "bob", "bob-pw-1")
    btoken = csrf(bob, api)
    guesses = [f"/ui/files/c/private?account={alice_uuid}",
               f"/ui/files/c/private/object?name=secret.txt&account={alice_uuid}",
               f"/ui/files/c/private/download?name=secret.txt&account={alice_uuid}"]
    for path in guesses:
        r = bob.get(api.url + path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "secret" not in r.text.replace("secret.txt", "")
    # bob's own container of the same name is his, not alice's
    r = bob.get(api.url + "/ui/files/c/private/download?name=secret.txt")
    assert r.status_code == 404
    # state changes aimed at alice's objects act on bob's account only (and fail there)
    r = bob.post(api.url + "/ui/files/c/private/object",
                 data={"name": "secret.txt", "action": "public", "csrf": btoken})
    assert r.status_code == 404
    assert alice.get(api.url + "/ui/files/c/private/download?name=secret.txt").content == b"secret"
    # volumes: another user's volume name is not found (compute's os-volumes)
    r = bob.post(api.url + "/ui/volumes/alices-volume", data={"action": "delete", "csrf": btoken})
    assert r.status_code == 404


def test_expired_session_goes_back_to_login(api: ApiServer) -> None:
    ident = api.host.plugin("identity").service
    uuid = api.call(ident.user("carol")).uuid
    token, _ = api.call(ident.login_token(uuid, "ui", -1))      # already expired
    s = requests.Session()
    s.cookies.set("archip_session", token)
    r = s.get(api.url + "/ui/files", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/login"
    r = s.post(api.url + "/ui/files", data={"name": "late", "csrf": "x"}, allow_redirects=False)
    assert r.status_code == 401 and "log in again" in r.text


def test_login_is_throttled(api: ApiServer) -> None:
    # identity's throttle: 5 failures per name or client address within the window
    codes = [requests.post(api.url + "/ui/login",
                           data={"username": "carol", "password": "wrong"}).status_code
             for _ in range(6)]
    assert codes[:5].count(401) >= 4 and codes[-1] == 429, codes
    r = requests.post(api.url + "/ui/login", data={"username": "carol", "password": "carol-pw-1"})
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    assert "archip_session" not in r.cookies


def test_front_proxy_login(tmp_path) -> None:  # noqa: ANN001
    """[identity] proxy_header from a listed proxy address logs the user in at /ui/login."""
    with ApiServer(tmp_path, plugins=["identity", "ui"],
                   overrides=['identity.proxy_header=X-Remote-User',
                              'identity.proxy_addresses=["127.0.0.1"]']) as srv:
        srv.call(srv.host.plugin("identity").service.add_user("erin", password="erin-pw-1"))
        r = requests.get(srv.url + "/ui/login", headers={"X-Remote-User": "erin"},
                         allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/"
        s = requests.Session()
        s.cookies.set("archip_session", r.cookies["archip_session"])
        assert "Hello, erin" in s.get(srv.url + "/ui/").text
        # without the header: the login form; an unknown user: refused, no session
        assert 'name="username"' in requests.get(srv.url + "/ui/login").text
        r = requests.get(srv.url + "/ui/login", headers={"X-Remote-User": "mallory"},
                         allow_redirects=False)
        assert r.status_code == 401 and "archip_session" not in r.cookies


def test_non_ascii_names_end_to_end(api: ApiServer) -> None:
    """Greek container, file, image and property names go through the gateway and Plankton."""
    ident = api.host.plugin("identity").service      # (the form is throttled by now)
    token, _ = api.call(ident.login_token(api.call(ident.user("bob")).uuid, "ui", 600))
    s = requests.Session()
    s.cookies.set("archip_session", token)
    token = csrf(s, api)
    s.post(api.url + "/ui/files", data={"name": "δίσκοι", "csrf": token})
    r = s.put(api.url + f"/ui/files/c/{quote('δίσκοι')}/upload?name={quote('ο δίσκος μου.img')}",
              data=b"x" * 1000, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    r = s.post(api.url + "/ui/images", data={"name": "Ελληνικά", "container": "δίσκοι",
                                             "object": "ο δίσκος μου.img", "disk_format": "raw",
                                             "properties": "os=λίνουξ", "csrf": token})
    assert r.status_code == 200 and "Ελληνικά" in r.text and "os=λίνουξ" in r.text
    got = s.get(api.url + f"/ui/files/c/{quote('δίσκοι')}/download",
                params={"name": "ο δίσκος μου.img"})
    assert got.content == b"x" * 1000
    assert "filename*=UTF-8''%CE%BF%20" in got.headers["Content-Disposition"]


def test_public_html_cannot_act_as_the_ui(api: ApiServer) -> None:
    """A public HTML file is served on the UI's origin: sandboxed, it gets an opaque origin
    (no cookies, no same-origin requests to /ui), and downloads are attachments."""
    ident = api.host.plugin("identity").service
    token, _ = api.call(ident.login_token(api.call(ident.user("alice")).uuid, "ui", 600))
    s = requests.Session()
    s.cookies.set("archip_session", token)
    t = csrf(s, api)
    s.post(api.url + "/ui/files", data={"name": "site", "csrf": t})
    evil = b"<script>fetch('/ui/').then(r => r.text()).then(alert)</script>"
    assert s.put(api.url + "/ui/files/c/site/upload?name=evil.html", data=evil,
                 headers={"X-CSRF-Token": t, "Content-Type": "text/html"}).status_code == 201
    r = s.post(api.url + "/ui/files/c/site/object", data={"name": "evil.html", "action": "public",
                                                         "csrf": t})
    link = re.search(r'id="public-link" href="([^"]+)"', r.text).group(1)
    pub = requests.get(link, timeout=30)
    assert pub.content == evil and pub.headers["Content-Security-Policy"] == "sandbox"
    assert pub.headers["X-Content-Type-Options"] == "nosniff"
    uuid = api.call(ident.user("alice")).uuid
    direct = requests.get(f"{api.url}/v1/{uuid}/site/evil.html?X-Auth-Token={token}", timeout=30)
    assert direct.content == evil and direct.headers["Content-Security-Policy"] == "sandbox"
    dl = s.get(api.url + "/ui/files/c/site/download", params={"name": "evil.html"})
    assert dl.headers["Content-Disposition"].startswith("attachment;")
