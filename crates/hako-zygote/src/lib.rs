//! C entry points the Python zygote calls through ctypes. All the work is in
//! [`hako_jail::zygote`]; this crate only adapts it to the C calling convention.

use std::os::raw::c_int;

/// Makes the zygote's next child pid 2 of a fresh pid namespace whose pid 1 is a reaper.
/// Returns the reaper's pid, or -1.
#[no_mangle]
pub extern "C" fn hako_prepare_fork() -> c_int {
    match hako_jail::zygote::prepare_fork() {
        Ok(reaper) => reaper.as_raw(),
        Err(err) => {
            eprintln!("hako zygote: {err}");
            -1
        }
    }
}

/// Ends the pid namespace of the reaper `pid` (from [`hako_prepare_fork`]): returns once
/// every process in it is gone.
#[no_mangle]
pub extern "C" fn hako_end_pid_namespace(pid: c_int) {
    hako_jail::zygote::end_pid_namespace(pid);
}

/// Confines a freshly forked run child (see [`hako_jail::zygote::confine_child`]) and
/// waits for RUN. Returns 0, or -1 after reporting the error to the supervisor. Either way
/// `run_ctl` is closed on return: the program never holds a channel to its supervisor.
///
/// # Safety
/// `params` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hako_confine(
    params: *const u8,
    len: usize,
    run_ctl: c_int,
    stdout: c_int,
    stderr: c_int,
    program: c_int,
) -> c_int {
    if params.is_null() {
        return -1;
    }
    // SAFETY: the caller guarantees `params` points to `len` readable bytes.
    let params = unsafe { std::slice::from_raw_parts(params, len) };
    match hako_jail::zygote::confine_child(params, run_ctl, stdout, stderr, program) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Writes the listing of the pages this process has written since its fork to `out` (see
/// [`hako_jail::zygote::list_written_pages`]); only hako's calibration program calls it.
/// Returns 0, or -1.
#[no_mangle]
pub extern "C" fn hako_list_written_pages(out: c_int) -> c_int {
    if out < 0 {
        return -1;
    }
    // SAFETY: the descriptor is only written to while this call lasts; an invalid one fails
    // the write with EBADF.
    let out = unsafe { std::os::fd::BorrowedFd::borrow_raw(out) };
    match hako_jail::zygote::list_written_pages(out) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}
