#!/usr/bin/env python3
"""Compare two directory trees field by field, sharing nothing with nfsroot.

An independent oracle for snapshot/restore round trips: it walks both trees
with os.scandir/os.lstat/os.readlink/os.listxattr (never following a
symlink) and compares, for every path in either tree:

  type, mode (with setuid/setgid/sticky), uid, gid, size (regular files),
  mtime (nanoseconds, or whole seconds with --mtime-resolution s),
  symlink target, device numbers, SHA-256 of the content (holes read as
  zeros, so a sparse file's content is compared in full), whether a file
  has holes (allocated bytes below its size), every xattr name and value
  (POSIX ACLs are the system.posix_acl_* xattrs), and hard-link groups
  (the set of paths sharing an inode within the tree).

Directory sizes are the file system's business and not compared. Options
say what the format leaves out by design: --empty DIR keeps DIR but not its
contents (mount points), sockets are skipped with --skip-sockets, and
--root-meta lets the top directory's own owner/mode/mtime differ (restore
sets it). Prints one line per difference and a summary line
"compared N entries, M differences"; exits 0 when equal, 1 when not, 2 on
bad usage.
"""

import argparse
import hashlib
import os
import stat
import sys

TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def content_hash(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def xattrs(path):
    out = {}
    for name in sorted(os.listxattr(path, follow_symlinks=False)):
        out[name] = os.getxattr(path, name, follow_symlinks=False).hex()
    return out


def walk(root, empty, skip_sockets):
    """Every entry below root: relative path -> lstat result."""
    entries = {".": os.lstat(root)}
    stack = [""]
    while stack:
        rel = stack.pop()
        if rel in empty:
            continue
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                sub = os.path.join(rel, e.name) if rel else e.name
                st = os.lstat(e.path)
                if skip_sockets and stat.S_ISSOCK(st.st_mode):
                    continue
                entries[sub] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(sub)
    return entries


def link_groups(entries):
    """Path -> the sorted paths sharing its inode, for multiply linked files."""
    by_inode = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
    groups = {}
    for paths in by_inode.values():
        for p in paths:
            groups[p] = sorted(paths)
    return groups


def record(root, rel, st, groups, args):
    """Every compared field of one entry."""
    path = os.path.join(root, rel)
    kind = TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    mtime = st.st_mtime_ns if args.mtime_resolution == "ns" else st.st_mtime_ns // 10**9
    r = {
        "type": kind,
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": mtime,
        "xattrs": xattrs(path),
    }
    if rel == "." and args.root_meta:
        for k in ("mode", "uid", "gid", "mtime"):
            del r[k]
    if kind == "file":
        r["size"] = st.st_size
        r["sha256"] = content_hash(path)
        r["links"] = groups.get(rel, [rel])
        if not args.no_holes:
            r["holes"] = st.st_blocks * 512 < st.st_size
    elif kind == "symlink":
        r["target"] = os.fsencode(os.readlink(path)).hex()
    elif kind in ("char", "block"):
        r["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return r


def compare(a_root, b_root, args):
    empty = {os.path.normpath(d.strip("/")) for d in args.empty}
    a = walk(a_root, empty, args.skip_sockets)
    b = walk(b_root, empty, args.skip_sockets)
    ga, gb = link_groups(a), link_groups(b)
    diffs = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append(f"{rel}: only in {a_root}")
            continue
        if rel not in a:
            diffs.append(f"{rel}: only in {b_root}")
            continue
        ra = record(a_root, rel, a[rel], ga, args)
        rb = record(b_root, rel, b[rel], gb, args)
        for field in ra.keys() | rb.keys():
            if ra.get(field) != rb.get(field):
                diffs.append(f"{rel}: {field}: {ra.get(field)!r} != {rb.get(field)!r}")
    return len(set(a) | set(b)), diffs


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--empty", action="append", default=[], metavar="DIR",
                   help="compare DIR itself but not its contents (repeatable)")
    p.add_argument("--skip-sockets", action="store_true")
    p.add_argument("--root-meta", action="store_true",
                   help="ignore the top directory's mode, owner and mtime")
    p.add_argument("--mtime-resolution", choices=["ns", "s"], default="ns")
    p.add_argument("--no-holes", action="store_true",
                   help="do not compare whether files have holes")
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not os.path.isdir(d):
            print(f"treecmp: not a directory: {d}", file=sys.stderr)
            return 2
    n, diffs = compare(args.a, args.b, args)
    for d in diffs:
        print(d)
    print(f"compared {n} entries, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
