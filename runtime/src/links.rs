//! tcx links of the datapath programs on the host-side interfaces, pinned so that they
//! stay attached after the process exits.
//!
//! A link pin is trusted only while the kernel still lists its program on that
//! interface and hook: when an interface is deleted its links go with it, and a new
//! interface of the same name needs a new link even though the old pin is still there.

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    loaded_programs,
    tc::{SchedClassifierLink, TcAttachOptions},
};

use crate::{
    bindings::ifindex_in_current_netns,
    error::{Result, RuntimeError},
    pins::{Hook, PinDir},
    store::ProgramIdentity,
};

/// What a link pin says about an interface and hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// No pin.
    Missing,
    /// The pinned link's program (this id) is attached there.
    Live { program_id: u32 },
    /// A pin whose link no longer carries the program there (the interface is gone or
    /// was replaced): the pin must be removed before a new link is pinned.
    Stale,
}

fn attach_type(hook: Hook) -> TcAttachType {
    match hook {
        Hook::Ingress => TcAttachType::Ingress,
        Hook::Egress => TcAttachType::Egress,
    }
}

/// Whether the link pinned for `interface` at `hook` is present and still attached.
pub(crate) fn link_state(pins: &PinDir, interface: &str, hook: Hook) -> Result<LinkState> {
    let path = pins.link(interface, hook);
    if path.symlink_metadata().is_err() {
        return Ok(LinkState::Missing);
    }
    if ifindex_in_current_netns(interface).is_err() {
        return Ok(LinkState::Stale);
    }
    let open_err = |source| RuntimeError::OpenLink { path: path.clone(), source: Box::new(source) };
    let link = FdLink::from(PinnedLink::from_pin(&path).map_err(open_err)?);
    let program_id = link.info().map_err(open_err)?.program_id();
    let (_, attached) =
        SchedClassifier::query_tcx(interface, attach_type(hook)).map_err(|source| {
            RuntimeError::QueryLinks {
                interface: interface.to_owned(),
                hook: hook.name(),
                source: Box::new(source),
            }
        })?;
    let live = attached.iter().any(|program| program.id() == program_id);
    Ok(if live { LinkState::Live { program_id } } else { LinkState::Stale })
}

/// The identity of loaded program `id`, or `None` if it is gone.
/// That is its tag (the kernel's hash of its instructions, equal for two loads of the same
/// code, map references aside) and the ids of the maps it uses, sorted: two programs with
/// the same code but other maps (after a migration to new maps) differ.
pub(crate) fn program_identity(id: u32) -> Result<Option<ProgramIdentity>> {
    let query_err = |source| RuntimeError::QueryProgram { id, source: Box::new(source) };
    for info in loaded_programs() {
        let info = info.map_err(query_err)?;
        if info.id() == id {
            let mut maps = info.map_ids().map_err(query_err)?.unwrap_or_default();
            maps.sort_unstable();
            return Ok(Some((info.tag(), maps)));
        }
    }
    Ok(None)
}

/// Puts `program` (the one of `program_hook`, see [`Hook::program_hook`]) on the link
/// pinned for `interface` at `hook` in place of the program it carries, in one
/// `BPF_LINK_UPDATE`: every packet meets the old program or the new one, never none. The
/// program must be loaded.
pub(crate) fn replace(
    program: &mut SchedClassifier,
    program_hook: Hook,
    pins: &PinDir,
    interface: &str,
    hook: Hook,
) -> Result<()> {
    let path = pins.link(interface, hook);
    let open_err = |source| RuntimeError::OpenLink { path: path.clone(), source: Box::new(source) };
    let link = FdLink::from(PinnedLink::from_pin(&path).map_err(open_err)?);
    let link = SchedClassifierLink::try_from(link).map_err(open_err)?;
    let replace_err = |source| RuntimeError::Attach {
        program: program_hook.program(),
        hook: hook.name(),
        interface: interface.to_owned(),
        source: Box::new(source),
    };
    let id = program.attach_to_link(link).map_err(replace_err)?;
    // The pin holds the link; this process's handle goes without detaching anything.
    drop(program.take_link(id).map_err(replace_err)?);
    tracing::debug!(interface, hook = hook.name(), "program replaced on the pinned link");
    Ok(())
}

/// Attaches `program` (the one of `program_hook`) at `hook` of `interface` with tcx
/// (after any program already there) and pins the link. The program must be loaded.
pub(crate) fn attach(
    program: &mut SchedClassifier,
    program_hook: Hook,
    pins: &PinDir,
    interface: &str,
    hook: Hook,
) -> Result<()> {
    let attach_err = |source| RuntimeError::Attach {
        program: program_hook.program(),
        hook: hook.name(),
        interface: interface.to_owned(),
        source: Box::new(source),
    };
    let path = pins.link(interface, hook);
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::PinLink {
        interface: interface.to_owned(),
        path: path.clone(),
        source,
    };

    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    let id =
        program.attach_with_options(interface, attach_type(hook), options).map_err(attach_err)?;
    let link = program.take_link(id).map_err(attach_err)?;
    let link = FdLink::try_from(link).map_err(|e| pin_err(Box::new(e)))?;
    link.pin(&path).map_err(|e| pin_err(Box::new(e)))?;
    tracing::debug!(interface, hook = hook.name(), path = %path.display(), "attached and pinned");
    Ok(())
}

/// Removes a link pin. With no other holder of the link, this detaches the program.
pub(crate) fn unpin(path: &std::path::Path) -> Result<()> {
    std::fs::remove_file(path)
        .map_err(|source| RuntimeError::Remove { path: path.to_owned(), source })
}
