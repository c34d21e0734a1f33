"""TLSContext: the C context, plus its conversion from an
ssl.SSLContext."""

from . import _twincore


class TLSContext(_twincore.TLSContext):
    __doc__ = _twincore.TLSContext.__doc__

    @classmethod
    def from_ssl_context(cls, ctx, *, server_side=None, certfile=None,
                         keyfile=None, alpn=None):
        """A TLSContext with the settings of an ssl.SSLContext that map
        cleanly: its side, verify_mode, check_hostname, minimum/maximum
        version, enabled ciphers and the CA certificates loaded into it
        (none loaded, as after ssl.create_default_context(): the system
        store). What ssl cannot give back is passed again: certfile and
        keyfile (a server's chain, a client's certificate) and alpn.
        Raises ValueError for what does not map."""
        import ssl
        if not isinstance(ctx, ssl.SSLContext):
            raise TypeError("from_ssl_context(): expected an ssl.SSLContext, "
                            f"got {type(ctx).__name__}")
        if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
            side = True
        elif ctx.protocol == ssl.PROTOCOL_TLS_CLIENT:
            side = False
        elif server_side is None:
            raise ValueError("from_ssl_context(): a generic PROTOCOL_TLS "
                             "context has no side: pass server_side=")
        else:
            side = bool(server_side)
        if server_side is not None and bool(server_side) != side:
            raise ValueError("from_ssl_context(): server_side contradicts "
                             "the context's protocol")
        if side and certfile is None:
            raise ValueError("from_ssl_context(): ssl.SSLContext does not "
                             "give back its certificate chain: pass "
                             "certfile= (and keyfile=)")
        kwargs = {"server_side": side, "certfile": certfile,
                  "keyfile": keyfile, "alpn": alpn}
        mode = ctx.verify_mode
        if side:
            kwargs["require_client_cert"] = mode == ssl.CERT_REQUIRED
            kwargs["request_client_cert"] = mode == ssl.CERT_OPTIONAL
        else:
            if mode == ssl.CERT_OPTIONAL:
                raise ValueError("from_ssl_context(): CERT_OPTIONAL has no "
                                 "meaning for a client; use CERT_REQUIRED "
                                 "or CERT_NONE")
            kwargs["verify"] = mode == ssl.CERT_REQUIRED
            kwargs["check_hostname"] = ctx.check_hostname
        low, high = ctx.minimum_version, ctx.maximum_version
        if low not in (ssl.TLSVersion.MINIMUM_SUPPORTED,):
            kwargs["minimum_version"] = int(low)
        if high not in (ssl.TLSVersion.MAXIMUM_SUPPORTED,):
            kwargs["maximum_version"] = int(high)
        cas = ctx.get_ca_certs(binary_form=True)
        if cas:
            kwargs["cadata"] = "".join(ssl.DER_cert_to_PEM_cert(der)
                                       for der in cas)
        ciphers = ctx.get_ciphers()
        old = [c["name"] for c in ciphers if c["protocol"] != "TLSv1.3"]
        new = [c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"]
        if old:
            kwargs["ciphers"] = ":".join(old)
        if new:
            kwargs["ciphersuites"] = ":".join(new)
        return cls(**kwargs)
