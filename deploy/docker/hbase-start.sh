#!/bin/sh
# HMaster (standalone: master, region server and ZooKeeper in one JVM) + the Thrift1 server.
set -e
OPENS="-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true --add-modules jdk.unsupported \
 --add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
 --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
 --add-opens java.base/java.lang.reflect=ALL-UNNAMED --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
 --add-exports java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-exports java.base/sun.net.dns=ALL-UNNAMED \
 --add-exports java.base/sun.net.util=ALL-UNNAMED"
CP="/opt/hbase/conf:/opt/hbase/lib/*"
java -Xmx768m $OPENS -cp "$CP" org.apache.hadoop.hbase.master.HMaster start &
exec java -Xmx256m $OPENS -cp "$CP" org.apache.hadoop.hbase.thrift.ThriftServer -p 9090 start
