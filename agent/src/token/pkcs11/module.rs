//! PKCS#11 module contexts: one per module path per process, and the token's PIN flags.

#[allow(unused_imports)]
use super::*;

/// A PKCS#11 module, loaded once per process: C_Initialize is process-wide, so every
/// token on the same module shares one context. Re-initialising it (to see tokens
/// created since, after a token went away) bumps its epoch; stores holding sessions of
/// an older epoch reconnect.
#[derive(Debug)]
pub(super) struct Module {
    path: PathBuf,
    state: Mutex<(Option<Pkcs11>, u64)>,
}

pub(super) static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

impl Module {
    pub(super) fn get(path: &std::path::Path) -> Result<Arc<Module>, TokenError> {
        let mut all = MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = all.get(path) {
            return Ok(m.clone());
        }
        let m = Arc::new(Module {
            path: path.to_path_buf(),
            state: Mutex::new((Some(load_module(path)?), 0)),
        });
        all.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, (Option<Pkcs11>, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn epoch(&self) -> u64 {
        self.lock().1
    }

    /// The live context (initialising the module again if it was finalised).
    pub(super) fn context(&self) -> Result<(Pkcs11, u64), TokenError> {
        let mut st = self.lock();
        if st.0.is_none() {
            st.0 = Some(load_module(&self.path)?);
        }
        match &st.0 {
            Some(c) => Ok((c.clone(), st.1)),
            None => Err(TokenError::Module {
                module: self.path.display().to_string(),
                reason: "not initialised".into(),
            }),
        }
    }

    /// Finalises the module if nobody did since `seen_epoch`.
    pub(super) fn reinit(&self, seen_epoch: u64) {
        let mut st = self.lock();
        if st.1 != seen_epoch {
            return;
        }
        if let Some(ctx) = st.0.take() {
            if let Err(e) = ctx.finalize() {
                debug!(module = %self.path.display(), "C_Finalize: {e}");
            }
        }
        st.1 += 1;
    }
}

pub(super) fn load_module(path: &std::path::Path) -> Result<Pkcs11, TokenError> {
    let ctx = Pkcs11::new(path).map_err(|e| TokenError::Module {
        module: path.display().to_string(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(TokenError::Module {
            module: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

pub(super) fn pin_warnings(ctx: &Pkcs11, slot: Slot) -> Vec<String> {
    let mut w = Vec::new();
    if let Ok(ti) = ctx.get_token_info(slot) {
        if ti.user_pin_locked() {
            w.push("locked".into());
        }
        if ti.user_pin_final_try() {
            w.push("final-try".into());
        }
        if ti.user_pin_count_low() {
            w.push("count-low".into());
        }
    }
    w
}
