//! C entry points the Python zygote calls through ctypes. All the work is in
//! [`hako_jail::zygote`]; this crate only adapts it to the C calling convention.

use std::os::raw::c_int;

/// 0 if this interpreter lets [`hako_serve`] fork; otherwise -1, and the reason is on
/// standard error.
#[no_mangle]
pub extern "C" fn hako_can_serve() -> c_int {
    match hako_jail::zygote::can_serve() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("hako zygote: {err}");
            -1
        }
    }
}

/// The zygote's loop (see [`hako_jail::zygote::serve_orders`]) on its control socket
/// `control`: forks, reaps and reports until the socket closes, then exits the process.
/// Returns only in a forked run child: its program's descriptor once it is confined and
/// given its run, or -1 after the failure went to its supervisor.
#[no_mangle]
pub extern "C" fn hako_serve(control: c_int) -> c_int {
    match hako_jail::zygote::serve_orders(control) {
        hako_jail::zygote::ChildStart::Program(program) => program,
        hako_jail::zygote::ChildStart::Failed => -1,
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
