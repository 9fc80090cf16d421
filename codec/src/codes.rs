//! Error codes and kick reasons: the numbers a client acts on.
//!
//! Both are open enums: a value this version does not know decodes to
//! `Unknown(n)` rather than failing, so a newer server can add codes without
//! breaking older clients.

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident($repr:ty) {
        $($(#[$doc:meta])* $var:ident = $val:literal => $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $var,)*
            /// A value this version does not know.
            Unknown($repr),
        }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];

            /// Decodes a wire value.
            pub fn from_wire(v: $repr) -> $name {
                match v {
                    $($val => $name::$var,)*
                    other => $name::Unknown(other),
                }
            }

            /// The wire value.
            pub fn to_wire(self) -> $repr {
                match self {
                    $($name::$var => $val,)*
                    $name::Unknown(v) => v,
                }
            }

            /// A short snake_case name, for logs and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $text,)*
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_enum! {
    /// The code in an error frame.
    ErrorCode(u16) {
        /// A frame could not be parsed (bad length, truncated, bad field).
        MalformedFrame = 1 => "malformed_frame",
        /// The header's version byte is not supported.
        UnsupportedVersion = 2 => "unsupported_version",
        /// The header's kind byte names no frame.
        UnknownKind = 3 => "unknown_kind",
        /// The frame is larger than the server's limit.
        FrameTooLarge = 4 => "frame_too_large",
        /// A frame other than login arrived before login succeeded.
        NotLoggedIn = 5 => "not_logged_in",
        /// The login token is not valid for this user and device.
        BadToken = 6 => "bad_token",
        /// The login token has expired.
        TokenExpired = 7 => "token_expired",
        /// A second login arrived on a logged-in connection.
        AlreadyLoggedIn = 8 => "already_logged_in",
        /// The user may not do this (not a member, not their inbox).
        Forbidden = 9 => "forbidden",
        /// The group or user does not exist.
        NotFound = 10 => "not_found",
        /// The request is well-formed but makes no sense (page size 0, ...).
        InvalidRequest = 11 => "invalid_request",
        /// The connection sends frames faster than its rate limit.
        RateLimited = 12 => "rate_limited",
        /// The server is at its connection limit.
        TooManyConnections = 13 => "too_many_connections",
        /// The backend is overloaded; retry later (msg:R is retried as usual).
        Overloaded = 14 => "overloaded",
        /// The server is shutting down.
        ShuttingDown = 15 => "shutting_down",
        /// An internal error; the request may be retried.
        Internal = 16 => "internal",
        /// A msg:R reuses a msg id, within the de-duplication window, for
        /// another message (another recipient or body): nothing was stored.
        MsgIdReused = 17 => "msg_id_reused",
        /// The device was revoked by the server API: no token logs it in
        /// until the time the revocation names.
        DeviceRevoked = 18 => "device_revoked",
        /// The server's disk is (nearly) full: the request was refused and
        /// nothing changed; retry after the wait the text starts with.
        StorageFull = 19 => "storage_full",
    }
}

open_enum! {
    /// The reason in a kick frame.
    KickReason(u8) {
        /// Nothing arrived within the heartbeat timeout.
        HeartbeatTimeout = 1 => "heartbeat_timeout",
        /// A new login of the same user and device replaced this connection.
        Replaced = 2 => "replaced",
        /// The outbound queue exceeded its byte limit; sync after reconnecting.
        SlowConsumer = 3 => "slow_consumer",
        /// The client broke the protocol (an error frame precedes the kick).
        ProtocolError = 4 => "protocol_error",
        /// The server is shutting down; reconnect elsewhere or later.
        ServerShutdown = 5 => "server_shutdown",
        /// An operator kicked the connection.
        Admin = 6 => "admin",
        /// The connection exceeded its frame-rate limit.
        RateLimited = 7 => "rate_limited",
        /// No login arrived within the login deadline.
        LoginTimeout = 8 => "login_timeout",
        /// Pushed messages stayed unacknowledged past the retry limit.
        PushUnacked = 9 => "push_unacked",
        /// The server API revoked the device.
        Revoked = 10 => "revoked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_values_survive() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(c.to_wire()), c);
        }
        for &r in KickReason::ALL {
            assert_eq!(KickReason::from_wire(r.to_wire()), r);
        }
        assert_eq!(ErrorCode::from_wire(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::Unknown(999).to_wire(), 999);
        assert_eq!(KickReason::from_wire(200).as_str(), "unknown");
    }
}
