/*
 * A hostile image's /bin/busybox (tests/integration/hostile.rs).
 *
 * Built with `gcc -static -DMARKER='"<abs path>"'` into the image under
 * test. Whenever it runs, it first creates MARKER (an absolute path on the
 * host, inside the test's temp dir): if that file exists after a command,
 * nfsroot executed image content on the host. It then prints the applet
 * list nfsroot's initramfs needs, one per line, as `busybox --list` does,
 * so a host that runs it is satisfied and goes on.
 *
 * The names are also stored as one NUL-delimited string, as in a real
 * busybox, so a scanner that reads the ELF without running it accepts
 * the file. Keep the list a superset of APPLETS in src/initramfs/mod.rs
 * (the test checks this).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef MARKER
#error "build with -DMARKER='\"/abs/path\"'"
#endif

static const char banner[] = "BusyBox v1.35.0 (hostile test double) multi-call binary.";
static const char names[] =
    "\0[\0[[\0cat\0cttyhack\0cut\0echo\0ip\0ls\0mkdir\0modprobe\0mount\0"
    "setsid\0sh\0sha256sum\0sleep\0sort\0switch_root\0tr\0udhcpc\0wc\0";

int main(int argc, char **argv) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        char cwd[4096];
        dprintf(fd, "ran as:");
        for (int i = 0; i < argc; i++)
            dprintf(fd, " %s", argv[i]);
        dprintf(fd, "\ncwd: %s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
        close(fd);
    }
    if (argc > 1 && strcmp(argv[1], "--help") == 0)
        puts(banner);
    /* Skip the leading NUL, then one name per NUL-terminated run. */
    for (const char *p = names + 1; p < names + sizeof names - 1; p += strlen(p) + 1)
        if (*p)
            puts(p);
    return 0;
}
