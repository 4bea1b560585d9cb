//! One SSH connection: authentication against the live accounts, and the channels it may open
//! (a session channel with the `sftp` subsystem; nothing else).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::stream::{self, Activity};
use super::view::{BoxView, SftpView};
use crate::accounts::{Account, AccountId, Role, break_glass};
use crate::boxes::DropBox;
use crate::error::Chain;
use crate::services::Services;
use crate::transport::sessions::SessionGuard;

pub struct SshSession {
    services: Services,
    peer: SocketAddr,
    connection_end: CancellationToken,
    /// The authenticated account, once there is one.
    account: Option<AccountId>,
    guard: Option<SessionGuard>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels open now, bounded by `max_channels_per_connection`.
    open_channels: Arc<AtomicUsize>,
    /// The slots of channels not yet serving SFTP; a channel serving SFTP holds its slot in its
    /// stream until it is closed (russh does not report a close the server began).
    channel_slots: HashMap<ChannelId, ChannelSlot>,
    /// A wrong password was given: no more password attempts on this connection.
    password_failed: bool,
    /// Held until the client authenticates: one of the few slots of unauthenticated
    /// connections.
    unauthenticated: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Cancelled when the client has authenticated (ends the login grace time).
    authenticated: CancellationToken,
    activity: Arc<Activity>,
}

/// Why an authentication attempt failed, as recorded (never the secret itself).
#[derive(Clone, Copy)]
enum FailClass {
    Banned,
    UnknownOrWrongKey,
    WrongPassword,
    Inactive,
    WeakAlgorithm,
    TooManySessions,
    NoBox,
    /// Over `password_attempts_per_minute`: refused before hashing.
    PasswordRate,
    /// Every argon2 slot stayed busy.
    HashingBusy,
}

impl FailClass {
    fn as_str(self) -> &'static str {
        match self {
            FailClass::Banned => "banned",
            FailClass::UnknownOrWrongKey => "unknown-account-or-key",
            FailClass::WrongPassword => "unknown-account-or-password",
            FailClass::Inactive => "account-inactive",
            FailClass::WeakAlgorithm => "weak-algorithm",
            FailClass::TooManySessions => "too-many-sessions",
            FailClass::NoBox => "no-box",
            FailClass::PasswordRate => "password-rate-limited",
            FailClass::HashingBusy => "password-checks-busy",
        }
    }
}

/// One open channel of a connection, counted until dropped.
pub struct ChannelSlot(Arc<AtomicUsize>);

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection holds until it authenticates.
pub struct Login {
    /// The connection's slot among the unauthenticated ones.
    pub unauthenticated: tokio::sync::OwnedSemaphorePermit,
    /// Cancelled once it authenticates.
    pub authenticated: CancellationToken,
}

/// How long a password attempt waits for an argon2 slot before it is refused.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl SshSession {
    pub fn new(
        services: Services,
        peer: SocketAddr,
        connection_end: CancellationToken,
        login: Login,
    ) -> SshSession {
        services.audit.record(
            crate::audit::Event::SftpConnect,
            None,
            Some(peer),
            json!({}),
        );
        SshSession {
            services,
            peer,
            connection_end,
            account: None,
            guard: None,
            channels: HashMap::new(),
            open_channels: Arc::new(AtomicUsize::new(0)),
            channel_slots: HashMap::new(),
            password_failed: false,
            unauthenticated: Some(login.unauthenticated),
            authenticated: login.authenticated,
            activity: Arc::new(Activity::new()),
        }
    }

    /// The methods a client may go on with as `user`: `password` only for an account that has a
    /// password (and not after a wrong one on this connection), so that password guessing at
    /// key-only accounts costs nothing but a refusal.
    fn methods_for(&self, user: &str) -> russh::MethodSet {
        let mut methods = russh::MethodSet::empty();
        methods.push(russh::MethodKind::PublicKey);
        let has_password = self
            .services
            .live
            .snapshot()
            .accounts
            .get(user)
            .is_some_and(|a| a.password_hash.is_some());
        if has_password && !self.password_failed {
            methods.push(russh::MethodKind::Password);
        }
        methods
    }

    fn fail(&mut self, user: &str, class: FailClass) -> Auth {
        if matches!(class, FailClass::WrongPassword) {
            self.password_failed = true;
        }
        use crate::transport::limits::Failure;
        // Refusals after a correct credential (too many sessions, no box) are not guesses;
        // attempts refused by a ban or a rate before any check tested nothing.
        let failure = match class {
            FailClass::Banned
            | FailClass::TooManySessions
            | FailClass::NoBox
            | FailClass::PasswordRate
            | FailClass::HashingBusy => None,
            _ if self.services.live.snapshot().accounts.get(user).is_none() => {
                Some(Failure::UnknownAccount)
            }
            _ => Some(Failure::WrongCredential),
        };
        let bans = match failure {
            Some(f) => self
                .services
                .limiter
                .record_failure(self.peer.ip(), Some(user), f),
            None => Vec::new(),
        };
        let labels = vec![
            ("transport", "sftp".to_owned()),
            ("reason", class.as_str().to_owned()),
        ];
        self.services
            .metrics
            .auth_failures
            .get_or_create(&labels)
            .inc();
        for b in &bans {
            let kind = b.kind();
            self.services
                .metrics
                .bans
                .get_or_create(&vec![
                    ("transport", "sftp".to_owned()),
                    ("kind", kind.to_owned()),
                ])
                .inc();
            self.services.audit.record(
                crate::audit::Event::AuthBan,
                Some(user),
                Some(self.peer),
                json!({"ban": b.to_string()}),
            );
        }
        self.services.audit.record(
            crate::audit::Event::SftpAuthFailure,
            Some(user),
            Some(self.peer),
            json!({"reason": class.as_str()}),
        );
        Auth::Reject {
            proceed_with_methods: Some(self.methods_for(user)),
            partial_success: false,
        }
    }

    /// The account if it may log in now, or why not.
    fn active_account(&self, user: &str) -> Result<Account, FailClass> {
        self.services
            .limiter
            .check_auth(self.peer.ip(), user)
            .map_err(|_| FailClass::Banned)?;
        let snapshot = self.services.live.snapshot();
        let account = snapshot
            .accounts
            .get(user)
            .cloned()
            .ok_or(FailClass::UnknownOrWrongKey)?;
        account
            .check_active(time::OffsetDateTime::now_utc())
            .map_err(|_| FailClass::Inactive)?;
        if matches!(account.role, Role::Noc | Role::Operator) {
            // NOC accounts use HTTPS only; operators work from the gateway's command line.
            return Err(FailClass::UnknownOrWrongKey);
        }
        if account.role == Role::BreakGlass {
            let (first, entry) = self.break_glass_use(&snapshot.config, &account.id)?;
            let open = self.services.sessions.count(&account.id);
            let now = time::OffsetDateTime::now_utc();
            if !break_glass::may_log_in(first, open, entry.max_session, now) {
                return Err(FailClass::Inactive);
            }
        }
        Ok(account)
    }

    /// The recorded use of a break-glass account under its current config entry (an
    /// unreadable record refuses the login), and that entry.
    fn break_glass_use(
        &self,
        config: &crate::config::Config,
        id: &str,
    ) -> Result<(Option<time::OffsetDateTime>, crate::config::BreakGlass), FailClass> {
        let entry = config
            .break_glass
            .iter()
            .find(|b| b.id == id)
            .cloned()
            .ok_or(FailClass::Inactive)?;
        let uses = break_glass::Uses::new(&self.services.layout);
        match uses.first_login(id, &entry.fingerprint()) {
            Ok(first) => Ok((first, entry)),
            Err(e) => {
                tracing::error!(account = id, error = %e, "reading the break-glass use record");
                Err(FailClass::Inactive)
            }
        }
    }

    /// Records the first login of a break-glass use (before letting it in) and closes its
    /// sessions `max_session` after that login; the account stays disabled afterwards.
    fn begin_break_glass_use(&self, id: &str) -> Result<(), FailClass> {
        let snapshot = self.services.live.snapshot();
        let (first, entry) = self.break_glass_use(&snapshot.config, id)?;
        let now = time::OffsetDateTime::now_utc();
        let first = match first {
            Some(first) => first,
            None => {
                let uses = break_glass::Uses::new(&self.services.layout);
                if let Err(e) = uses.record(id, &entry.fingerprint(), now) {
                    tracing::error!(account = id, error = %e, "recording a break-glass use");
                    return Err(FailClass::Inactive);
                }
                self.services.audit.record(
                    crate::audit::Event::BreakGlassUsed,
                    Some(id),
                    Some(self.peer),
                    json!({"max_session_seconds": entry.max_session.as_secs(), "reason": entry.reason}),
                );
                now
            }
        };
        let left = (first + entry.max_session - now)
            .try_into()
            .unwrap_or(std::time::Duration::ZERO);
        let services = self.services.clone();
        let end = self.connection_end.clone();
        let account = id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = end.cancelled() => return,
            }
            let closed = services.sessions.revoke(&account);
            services.audit.record(
                crate::audit::Event::BreakGlassMaxSession,
                Some(&account),
                None,
                json!({"sessions_closed": closed}),
            );
        });
        Ok(())
    }

    fn key_matches(account: Option<&Account>, key: &russh::keys::PublicKey) -> bool {
        account.is_some_and(|a| a.ssh_keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    /// Registers the session and builds its box view; the last step before `Accept`.
    fn admit(&mut self, account: &Account, method: &str) -> Result<(), FailClass> {
        let max = self.services.live.limits().max_sessions_per_account;
        let guard = self
            .services
            .sessions
            .register(&account.id, max)
            .map_err(|_| FailClass::TooManySessions)?;
        // Fail now rather than at the first request if a box cannot be opened.
        self.view_for(account).map_err(|_| FailClass::NoBox)?;
        if account.role == Role::BreakGlass {
            self.begin_break_glass_use(&account.id)?;
        }
        let revoked = guard.token().clone();
        let end = self.connection_end.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = revoked.cancelled() => end.cancel(),
                _ = end.cancelled() => {}
            }
        });
        self.guard = Some(guard);
        self.account = Some(account.id.clone());
        self.unauthenticated = None;
        self.authenticated.cancel();
        self.watch_idle(&account.id);
        self.services
            .metrics
            .sessions
            .get_or_create(&vec![("transport", "sftp".to_owned())])
            .inc();
        self.services.audit.record(
            crate::audit::Event::SftpLogin,
            Some(&account.id),
            Some(self.peer),
            json!({"method": method, "role": account.role.to_string()}),
        );
        if account.role == Role::BreakGlass {
            crate::metrics::alerts::raise_for(
                &self.services,
                crate::audit::Alert::BreakGlass,
                Some(&account.id),
                Some(self.peer),
                json!({"transport": "sftp"}),
            );
        }
        Ok(())
    }

    /// Closes the connection once its channels have not moved for `idle_timeout`.
    fn watch_idle(&self, account: &str) {
        let timeout = self.services.live.limits().idle_timeout;
        let activity = self.activity.clone();
        activity.touch();
        let end = self.connection_end.clone();
        let services = self.services.clone();
        let account = account.to_owned();
        let peer = self.peer;
        tokio::spawn(async move {
            // Each round sleeps until the earliest moment the session could be idle.
            loop {
                let idle = activity.idle_for();
                if idle >= timeout {
                    services.audit.record(
                        crate::audit::Event::SftpIdleTimeout,
                        Some(&account),
                        Some(peer),
                        json!({"idle_seconds": idle.as_secs()}),
                    );
                    end.cancel();
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(timeout - idle) => {}
                    _ = end.cancelled() => return,
                }
            }
        });
    }

    fn view_for(&self, account: &Account) -> Result<BoxView, crate::boxes::BoxError> {
        let snapshot = self.services.live.snapshot();
        let layout = &self.services.layout;
        if account.is_counterpart() {
            Ok(BoxView::Own(DropBox::open(
                layout,
                self.services.files.as_ref(),
                &snapshot,
                &self.services.master,
                &account.id,
                &account.id.as_counterpart(),
                crate::events::Channel::Sftp,
            )?))
        } else {
            let mut boxes = BTreeMap::new();
            for owner in &account.boxes {
                boxes.insert(
                    owner.clone(),
                    DropBox::open(
                        layout,
                        self.services.files.as_ref(),
                        &snapshot,
                        &self.services.master,
                        &account.id,
                        owner,
                        crate::events::Channel::Sftp,
                    )?,
                );
            }
            Ok(BoxView::Scoped(boxes))
        }
    }

    fn refuse_channel_use(&self, what: &str) {
        self.services.audit.record(
            crate::audit::Event::SftpRefused,
            self.account.as_deref(),
            Some(self.peer),
            json!({"request": what}),
        );
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        if let Some(account) = &self.account {
            self.services
                .metrics
                .sessions
                .get_or_create(&vec![("transport", "sftp".to_owned())])
                .dec();
            self.services.audit.record(
                crate::audit::Event::SftpLogout,
                Some(account),
                Some(self.peer),
                json!({}),
            );
        }
        self.connection_end.cancel();
    }
}

impl russh::server::Handler for SshSession {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: Some(self.methods_for(user)),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Unknown user and wrong key take the same path: look up, compare, reject.
        let account = self.active_account(user);
        let matches = Self::key_matches(account.as_ref().ok(), offer.public_key);
        match account {
            Err(class) => Ok(self.fail(user, class)),
            Ok(_) if !matches => Ok(self.fail(user, FailClass::UnknownOrWrongKey)),
            Ok(_) if *offer.algorithm == (russh::keys::Algorithm::Rsa { hash: None }) => {
                Ok(self.fail(user, FailClass::WeakAlgorithm))
            }
            Ok(_) => Ok(Auth::Accept),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let account = match self.active_account(user) {
            Ok(a) => a,
            Err(class) => return Ok(self.fail(user, class)),
        };
        if !Self::key_matches(Some(&account), key.public_key) {
            return Ok(self.fail(user, FailClass::UnknownOrWrongKey));
        }
        if *key.algorithm == (russh::keys::Algorithm::Rsa { hash: None }) {
            return Ok(self.fail(user, FailClass::WeakAlgorithm));
        }
        match self.admit(&account, "publickey") {
            Ok(()) => Ok(Auth::Accept),
            Err(class) => Ok(self.fail(user, class)),
        }
    }

    /// Cheap refusals first (ban, no password, rate), then argon2 in one of a few slots.
    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self
            .services
            .limiter
            .check_auth(self.peer.ip(), user)
            .is_err()
        {
            return Ok(self.fail(user, FailClass::Banned));
        }
        let hash = self
            .services
            .live
            .snapshot()
            .accounts
            .get(user)
            .and_then(|a| a.password_hash.clone());
        // Not offered to this account (or after a wrong password): nothing to hash.
        let Some(hash) = hash.filter(|_| !self.password_failed) else {
            return Ok(self.fail(user, FailClass::WrongPassword));
        };
        if self
            .services
            .limiter
            .check_password_rate(self.peer.ip())
            .is_err()
        {
            return Ok(self.fail(user, FailClass::PasswordRate));
        }
        let Some(slot) = self.services.limiter.hashing_slot(HASHING_WAIT).await else {
            return Ok(self.fail(user, FailClass::HashingBusy));
        };
        let password = zeroize::Zeroizing::new(password.as_bytes().to_vec());
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            use argon2::PasswordVerifier;
            argon2::PasswordHash::new(&hash)
                .map(|h| {
                    argon2::Argon2::default()
                        .verify_password(&password, &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !verified {
            return Ok(self.fail(user, FailClass::WrongPassword));
        }
        let account = match self.active_account(user) {
            Ok(a) => a,
            Err(class) => return Ok(self.fail(user, class)),
        };
        match self.admit(&account, "password") {
            Ok(()) => Ok(Auth::Accept),
            Err(class) => Ok(self.fail(user, class)),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.account.is_none() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let max = self.services.live.limits().max_channels_per_connection;
        if self.open_channels.load(Ordering::Relaxed) >= max as usize {
            self.refuse_channel_use("channel over max_channels_per_connection");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        self.activity.touch();
        self.open_channels.fetch_add(1, Ordering::Relaxed);
        self.channel_slots
            .insert(channel.id(), ChannelSlot(self.open_channels.clone()));
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(account_id) = self.account.clone() else {
            return session.channel_failure(channel_id);
        };
        if name != "sftp" {
            self.refuse_channel_use(&format!("subsystem {name}"));
            return session.channel_failure(channel_id);
        }
        let Some(channel) = self.channels.remove(&channel_id) else {
            return session.channel_failure(channel_id);
        };
        let snapshot = self.services.live.snapshot();
        let Some(account) = snapshot.accounts.get(&account_id).cloned() else {
            return session.channel_failure(channel_id);
        };
        let view = match self.view_for(&account) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(account = %account_id, error = %Chain(&e), "cannot open box");
                return session.channel_failure(channel_id);
            }
        };
        session.channel_success(channel_id)?;
        let slot = self.channel_slots.remove(&channel_id);
        let stream = stream::open(
            channel,
            self.connection_end.clone(),
            self.activity.clone(),
            slot,
        );
        let handler = SftpView::new(self.services.clone(), account_id, Some(self.peer), view);
        super::requests::spawn(stream, handler);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channel_slots.remove(&channel);
        self.channels.remove(&channel);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("shell");
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The command line is not recorded: it may carry secrets.
        self.refuse_channel_use("exec");
        session.channel_failure(channel)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("pty");
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("x11");
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_channel_use("agent-forwarding");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_channel_use("tcpip-forward");
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_channel_use("streamlocal-forward");
        Ok(false)
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("direct-tcpip");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("x11-channel");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_use("direct-streamlocal");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}
