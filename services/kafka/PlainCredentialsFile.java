package org.albireo.kafka;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.NameCallback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.plain.PlainAuthenticateCallback;
import org.apache.kafka.common.security.plain.PlainLoginModule;

/**
 * SASL/PLAIN verification against a file of PBKDF2 hashes, so PLAIN users (antares-client) can be
 * added, re-keyed and removed while the broker runs, and no password is stored in clear.
 *
 * <p>Why not Kafka's own PLAIN handler: it reads {@code user_NAME="password"} pairs from the JAAS
 * configuration once, at start-up, in clear text. {@code albireo users} writes this file instead
 * (one line per user: {@code NAME:pbkdf2-sha512:ITERATIONS:SALT_B64:HASH_B64}, replaced
 * atomically); the handler re-reads it whenever its modification time or size changes.
 *
 * <p>Configured on the consumer listener by {@code broker/ops/services.py}:
 * {@code listener.name.consumers.plain.sasl.server.callback.handler.class} names this class and the
 * PlainLoginModule JAAS entry carries the option {@code credentials_file}.
 */
public final class PlainCredentialsFile implements AuthenticateCallbackHandler {
    private static final String SCHEME = "pbkdf2-sha512";
    /** Verified for unknown users too, so a missing user takes as long as a wrong password. */
    private static final Entry DUMMY = new Entry(210_000, new byte[16], new byte[64]);

    private Path file;
    private volatile Snapshot snapshot = new Snapshot(null, -1L, -1L, Map.of());

    private record Entry(int iterations, byte[] salt, byte[] hash) {}

    /** The file is replaced by a rename, so its inode (fileKey) changes with every write. */
    private record Snapshot(Object key, long mtime, long size, Map<String, Entry> users) {}

    @Override
    public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> entries) {
        if (!"PLAIN".equals(mechanism)) {
            throw new IllegalArgumentException("PlainCredentialsFile handles PLAIN only, not " + mechanism);
        }
        for (AppConfigurationEntry entry : entries) {
            if (PlainLoginModule.class.getName().equals(entry.getLoginModuleName())) {
                Object path = entry.getOptions().get("credentials_file");
                if (path != null) {
                    file = Paths.get(path.toString());
                }
            }
        }
        if (file == null) {
            throw new IllegalArgumentException("the PlainLoginModule JAAS entry needs credentials_file=\"<path>\"");
        }
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException, IOException {
        String user = null;
        for (Callback callback : callbacks) {
            if (callback instanceof NameCallback nc) {
                user = nc.getDefaultName();
            } else if (callback instanceof PlainAuthenticateCallback pc) {
                pc.authenticated(user != null && verify(user, pc.password()));
            } else {
                throw new UnsupportedCallbackException(callback);
            }
        }
    }

    private boolean verify(String user, char[] password) throws IOException {
        Entry entry = current().users().get(user);
        boolean known = entry != null;
        Entry e = known ? entry : DUMMY;
        byte[] got;
        try {
            PBEKeySpec spec = new PBEKeySpec(password, e.salt(), e.iterations(), e.hash().length * 8);
            got = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA512").generateSecret(spec).getEncoded();
            spec.clearPassword();
        } catch (GeneralSecurityException ex) {
            throw new IOException("PBKDF2WithHmacSHA512 unavailable", ex);
        }
        return MessageDigest.isEqual(got, e.hash()) && known;
    }

    private synchronized Snapshot current() throws IOException {
        Object key;
        long mtime;
        long size;
        try {
            BasicFileAttributes attrs = Files.readAttributes(file, BasicFileAttributes.class);
            key = attrs.fileKey();
            mtime = attrs.lastModifiedTime().toMillis();
            size = attrs.size();
        } catch (NoSuchFileException missing) {
            snapshot = new Snapshot(null, -1L, -1L, Map.of());
            return snapshot;
        }
        if (key != null && key.equals(snapshot.key()) && mtime == snapshot.mtime() && size == snapshot.size()) {
            return snapshot;
        }
        Map<String, Entry> users = new HashMap<>();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] f = line.split(":");
            if (f.length != 5 || !SCHEME.equals(f[1])) {
                continue; // a line this version cannot read grants nothing
            }
            try {
                Base64.Decoder b64 = Base64.getDecoder();
                users.put(f[0], new Entry(Integer.parseInt(f[2]), b64.decode(f[3]), b64.decode(f[4])));
            } catch (IllegalArgumentException bad) {
                // skip a malformed line
            }
        }
        snapshot = new Snapshot(key, mtime, size, Map.copyOf(users));
        return snapshot;
    }

    @Override
    public void close() {
    }
}
